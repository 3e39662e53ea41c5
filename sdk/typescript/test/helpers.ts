/** Shared by the tests: the client from the environment, fresh values, a dropping TCP proxy. */
import { randomBytes, randomUUID } from "node:crypto";
import { type Server, type Socket, createServer, connect } from "node:net";

import { AssetWithdrawal, type ClientOptions } from "@assetwithdrawal/sdk";

export function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: the tests run against a real gateway (see tests/sdk_typescript)`);
  return value;
}

export const BASE_URL = (): string => env("ASSETWITHDRAWAL_BASE_URL");
export const API_KEY = (): string => env("ASSETWITHDRAWAL_API_KEY");

export function client(options: Partial<ClientOptions> = {}): AssetWithdrawal {
  return new AssetWithdrawal({ apiKey: API_KEY(), baseUrl: BASE_URL(), initialRetryDelayMs: 100, ...options });
}

export function freshAddress(): string {
  return `0x${randomBytes(20).toString("hex")}`;
}

export function unique(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** A TCP proxy to the gateway that can cut every open connection at once (a dropped stream). */
export class DroppingProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  connections = 0;

  constructor(private readonly target: URL) {}

  async start(): Promise<string> {
    this.server = createServer((client) => {
      this.connections += 1;
      const upstream = connect(Number(this.target.port), this.target.hostname);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => undefined);
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    if (address === null || typeof address === "string") throw new Error("no proxy address");
    return `http://127.0.0.1:${address.port}`;
  }

  /** Cut every connection now, as a network failure would. */
  drop(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async stop(): Promise<void> {
    this.drop();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}
