#!/usr/bin/env node
// Compile every contracts/*.sol and contracts/test/*.sol (test-only contracts) with the pinned
// solc (npm `solc`, solc-js) into committed, byte-for-byte reproducible artifacts:
// contracts/build/<ContractName>.json and contracts/build/test/<ContractName>.json, each holding
// {abi, bytecode, compiler, contractName, deployedBytecode, settings, sourceName}. Contract names
// are unique across both directories.
//
// Usage (from anywhere; paths are relative to the repository root):
//   node scripts/compile_contracts.mjs                 write contracts/build/{,test/}*.json
//   node scripts/compile_contracts.mjs --out-dir DIR   write the artifacts into DIR (and DIR/test)
//   node scripts/compile_contracts.mjs --check         write nothing; exit 1 when contracts/build
//                                                      differs from what the sources compile to
//
// Determinism: fixed compiler (package-lock), fixed settings below, source units named by their
// repository-relative path, keys sorted recursively, two-space JSON with a final newline, and
// stale *.json artifacts (from deleted contracts) removed. Imports of `@openzeppelin/...` (and of
// any other npm package) resolve from node_modules through solc's import callback; nothing is
// downloaded.

import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const solc = require('solc')

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const CONTRACTS_DIR = path.join(REPO_ROOT, 'contracts')
const DEFAULT_OUT_DIR = path.join(CONTRACTS_DIR, 'build')
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules')
// Source directories (relative to contracts/) and the artifact subdirectory (relative to the
// output directory) each one compiles into.
const SOURCE_DIRS = [
  { sourceDir: '', artifactDir: '' },
  { sourceDir: 'test', artifactDir: 'test' },
]

// Changing any of these changes every artifact's bytecode; `make contracts-check` will say so.
const SETTINGS = {
  evmVersion: 'cancun', // supported by anvil and by Polygon PoS
  metadata: { bytecodeHash: 'ipfs' },
  optimizer: { enabled: true, runs: 200 },
  viaIR: false,
}

function parseArgs(argv) {
  const args = { check: false, outDir: DEFAULT_OUT_DIR }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--check') args.check = true
    else if (arg === '--out-dir') {
      if (i + 1 >= argv.length) fail('--out-dir needs a directory')
      args.outDir = path.resolve(argv[++i])
    } else if (arg === '-h' || arg === '--help') {
      console.log('usage: node scripts/compile_contracts.mjs [--out-dir DIR] [--check]')
      process.exit(0)
    } else fail(`unknown argument: ${arg}`)
  }
  return args
}

function fail(message) {
  console.error(`compile_contracts: ${message}`)
  process.exit(2)
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (value !== null && typeof value === 'object') {
    const sorted = {}
    for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key])
    return sorted
  }
  return value
}

function render(value) {
  return `${JSON.stringify(sortKeys(value), null, 2)}\n`
}

// solc asks for every import it cannot find among the given sources, by its normalised virtual
// path (e.g. "@openzeppelin/contracts/utils/Context.sol"). Package imports come from
// node_modules, project imports ("contracts/...") from the repository; nothing may escape them.
function findImports(importPath) {
  const candidates = importPath.startsWith('@') || !importPath.startsWith('contracts/')
    ? [path.join(NODE_MODULES, importPath)]
    : [path.join(REPO_ROOT, importPath)]
  for (const candidate of candidates) {
    const resolved = path.resolve(candidate)
    const inside = resolved.startsWith(NODE_MODULES + path.sep) || resolved.startsWith(CONTRACTS_DIR + path.sep)
    if (inside && fs.existsSync(resolved)) return { contents: fs.readFileSync(resolved, 'utf8') }
  }
  const hint = importPath.startsWith('@') ? ' (has `make deps` run?)' : ''
  return { error: `import not found: ${importPath}${hint}` }
}

function solidityFiles(dir) {
  if (!fs.existsSync(dir)) return []
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.sol'))
    .map((entry) => entry.name)
    .sort()
}

function compile() {
  if (solidityFiles(CONTRACTS_DIR).length === 0) fail(`no .sol files in ${CONTRACTS_DIR}`)
  const sources = {}
  const artifactDirOf = {}
  for (const { sourceDir, artifactDir } of SOURCE_DIRS) {
    for (const file of solidityFiles(path.join(CONTRACTS_DIR, sourceDir))) {
      const sourceName = path.posix.join('contracts', sourceDir, file)
      sources[sourceName] = { content: fs.readFileSync(path.join(REPO_ROOT, sourceName), 'utf8') }
      artifactDirOf[sourceName] = artifactDir
    }
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      ...SETTINGS,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  }
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }))
  const diagnostics = output.errors ?? []
  for (const diagnostic of diagnostics) console.error(diagnostic.formattedMessage ?? diagnostic.message)
  if (diagnostics.some((d) => d.severity === 'error')) {
    console.error('compile_contracts: compilation failed')
    process.exit(1)
  }

  const artifacts = new Map()
  const seen = new Set()
  for (const sourceName of Object.keys(sources)) {
    const contracts = output.contracts?.[sourceName] ?? {}
    for (const contractName of Object.keys(contracts).sort()) {
      const compiled = contracts[contractName]
      const bytecode = compiled.evm.bytecode.object
      if (!bytecode) continue // interfaces and abstract contracts have nothing to deploy
      if (seen.has(contractName)) fail(`two contracts are named ${contractName}`)
      seen.add(contractName)
      artifacts.set(
        path.posix.join(artifactDirOf[sourceName], `${contractName}.json`),
        render({
          abi: compiled.abi,
          bytecode: `0x${bytecode}`,
          compiler: { name: 'solc', version: solc.version() },
          contractName,
          deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
          settings: SETTINGS,
          sourceName,
        }),
      )
    }
  }
  return artifacts
}

// Relative paths ("X.json", "test/X.json") of the artifacts already in the output directories.
function existingArtifacts(outDir) {
  const names = []
  for (const { artifactDir } of SOURCE_DIRS) {
    const dir = path.join(outDir, artifactDir)
    if (!fs.existsSync(dir)) continue
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.isFile() && entry.name.endsWith('.json')) names.push(path.posix.join(artifactDir, entry.name))
    }
  }
  return names.sort()
}

function main() {
  const args = parseArgs(process.argv.slice(2))
  const artifacts = compile()
  const stale = existingArtifacts(args.outDir).filter((name) => !artifacts.has(name))

  if (args.check) {
    const problems = []
    for (const [name, text] of artifacts) {
      const file = path.join(args.outDir, name)
      if (!fs.existsSync(file)) problems.push(`missing: ${file}`)
      else if (fs.readFileSync(file, 'utf8') !== text) problems.push(`differs: ${file}`)
    }
    for (const name of stale) problems.push(`stale: ${path.join(args.outDir, name)}`)
    if (problems.length > 0) {
      for (const problem of problems) console.error(problem)
      console.error(
        "compile_contracts: artifacts drifted from contracts/{,test/}*.sol: run 'make contracts' and commit",
      )
      process.exit(1)
    }
    console.log(`compile_contracts: ${artifacts.size} artifact(s) up to date`)
    return
  }

  fs.mkdirSync(args.outDir, { recursive: true })
  for (const name of stale) fs.rmSync(path.join(args.outDir, name))
  for (const [name, text] of artifacts) {
    const file = path.join(args.outDir, name)
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, text)
  }
  console.log(`compile_contracts: wrote ${[...artifacts.keys()].join(', ')} to ${path.relative(REPO_ROOT, args.outDir) || '.'}`)
}

main()
