// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title PayoutVault
/// @notice Holds the tokens it pays out and pays many withdrawals in one transaction, each exactly
///         once. Every withdrawal carries a unique 64-bit payout number; a bitmap (256 numbers per
///         storage slot, so consecutive numbers share a slot) records the numbers paid, and a
///         number already paid is skipped with `PaymentSkipped`. One failing transfer (a reverting
///         or false-returning token, an exceeded outflow cap) emits `PaymentFailed`, leaves its bit
///         unset and does not stop the others. One `PayoutExecuted` per call summarises it; the
///         token's own `Transfer` logs carry recipients and amounts.
/// @dev Roles: the owner (meant to be a Safe multisig) sets operators, pauses, sets outflow caps and
///      sweeps; operators (hot wallets) may only call `payout`. The vault never approves anything.
///      Within `payout` the bitmap word of the current slot is cached in memory and written back
///      once per slot; `nonReentrant` (on every state-changing function) makes that safe, since no
///      callback from a token can reach the bitmap or the outflow accounting.
contract PayoutVault is Ownable, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Per-token outflow cap: at most `capPerWindow` base units per fixed window of
    ///         `windowSeconds` (window index = block.timestamp / windowSeconds). Cap 0 = no cap.
    struct OutflowCap {
        uint192 capPerWindow;
        uint64 windowSeconds;
    }

    /// @notice What a token has paid out in the window `windowIndex`.
    struct OutflowUsage {
        uint64 windowIndex;
        uint192 spent;
    }

    uint256 private constant MAX_REASON_LENGTH = 256;

    /// @notice Bit `n % 256` of word `n / 256` is set when payout number `n` has been paid.
    mapping(uint256 slot => uint256 word) public paidBitmap;
    /// @notice Accounts (hot wallets) allowed to call `payout`.
    mapping(address account => bool allowed) public operators;
    /// @notice Per-token outflow cap (capPerWindow 0 = none).
    mapping(address token => OutflowCap cap) public outflowCaps;
    /// @notice Per-token outflow in its current window.
    mapping(address token => OutflowUsage usage) public outflowUsage;

    /// @notice One per `payout` call: `count` payments given, `paid` of them paid now, for a total
    ///         of `totalAmount` base units; `firstNumber` is the number of the first payment given.
    event PayoutExecuted(address indexed token, uint64 firstNumber, uint32 count, uint32 paid, uint256 totalAmount);
    /// @notice Payment `number` was already paid (earlier, or earlier in the same call); not paid again.
    event PaymentSkipped(uint64 indexed number);
    /// @notice Payment `number` was not paid and its bit stays unset: `reason` is the token's revert
    ///         data (at most 256 bytes, possibly empty), "TRANSFER_RETURNED_FALSE" or "OUTFLOW_CAP".
    event PaymentFailed(uint64 indexed number, bytes reason);
    event OperatorSet(address indexed operator, bool allowed);
    event OutflowCapSet(address indexed token, uint256 capPerWindow, uint64 windowSeconds);
    event Swept(address indexed token, address indexed to, uint256 amount);

    error NotOperator(address account);
    /// @notice `packed` must hold a positive, even number of words (two per payment).
    error InvalidPackedLength(uint256 length);
    /// @notice Word0 of payment `index` has bits set above bit 223 (the number is a uint64).
    error InvalidPaymentWord(uint256 index);
    /// @notice The token address has no code (a call to it would "succeed" without paying).
    error TokenNotContract(address token);
    /// @notice A non-zero cap needs a non-zero window, and fits in 192 bits.
    error InvalidOutflowCap(uint256 capPerWindow, uint64 windowSeconds);
    /// @notice A transfer failed because it ran out of gas: the whole payout reverts instead of
    ///         marking the item failed, so a too-low gas limit (or eth_estimateGas's search for
    ///         the lowest limit that does not revert) can never turn into spurious failures.
    error TransferOutOfGas(uint64 number);
    /// @notice Renouncing ownership would strand the vault's funds (nobody could sweep them).
    error RenounceOwnershipDisabled();

    modifier onlyOperator() {
        if (!operators[msg.sender]) revert NotOperator(msg.sender);
        _;
    }

    constructor(address owner_) Ownable(owner_) {}

    // -- payouts -------------------------------------------------------------------------------

    /// @notice Pay every payment in `packed` (two words each: word0 = number << 160 | recipient,
    ///         word1 = amount) with `token.transfer`, skipping numbers already paid.
    function payout(address token, uint256[] calldata packed) external onlyOperator whenNotPaused nonReentrant {
        uint256 length = packed.length;
        if (length == 0 || length % 2 != 0 || length / 2 > type(uint32).max) revert InvalidPackedLength(length);
        if (token.code.length == 0) revert TokenNotContract(token);

        // What the outflow cap still allows in this window; max uint256 (caps are < 2**192) if none.
        uint256 allowed = _outflowAllowed(token);
        uint256 paid;
        uint256 total; // sum of the amounts paid now, never above `allowed`
        // The bitmap word of `slot`, cached; the sentinel slot is never a real one (64-bit numbers).
        uint256 slot = type(uint256).max;
        uint256 word;
        bool dirty;

        for (uint256 i; i < length; i += 2) {
            uint256 word0 = packed[i];
            if (word0 >> 224 != 0) revert InvalidPaymentWord(i / 2);
            uint64 number = uint64(word0 >> 160);
            if (number >> 8 != slot) {
                if (dirty) {
                    paidBitmap[slot] = word;
                    dirty = false;
                }
                slot = number >> 8;
                word = paidBitmap[slot];
            }
            uint256 bit = 1 << (number & 0xff);
            if (word & bit != 0) {
                emit PaymentSkipped(number);
                continue;
            }
            uint256 amount = packed[i + 1];
            if (amount > allowed - total) {
                emit PaymentFailed(number, "OUTFLOW_CAP");
                continue;
            }
            // The bit is set only once the transfer succeeded (it lives in memory until written
            // back, so "set, pay, clear on failure" and "pay, set on success" are the same here).
            if (_pay(token, word0, amount, number)) {
                word |= bit;
                dirty = true;
                unchecked {
                    ++paid;
                    total += amount; // amount <= allowed - total
                }
            }
        }
        if (dirty) paidBitmap[slot] = word;
        if (allowed != type(uint256).max) _recordOutflow(token, total);
        emit PayoutExecuted(token, uint64(packed[0] >> 160), uint32(length / 2), uint32(paid), total);
    }

    /// @notice Whether payout number `number` has been paid.
    function isPaid(uint64 number) external view returns (bool) {
        return paidBitmap[number >> 8] & (1 << (number & 0xff)) != 0;
    }

    /// @notice Base units `token` may still pay out in the current window (max uint256 if uncapped).
    function remainingOutflow(address token) external view returns (uint256) {
        return _outflowAllowed(token);
    }

    function _outflowAllowed(address token) private view returns (uint256) {
        OutflowCap memory cap = outflowCaps[token];
        if (cap.capPerWindow == 0) return type(uint256).max;
        OutflowUsage memory usage = outflowUsage[token];
        uint256 spent = usage.windowIndex == block.timestamp / cap.windowSeconds ? usage.spent : 0;
        return cap.capPerWindow > spent ? cap.capPerWindow - spent : 0;
    }

    /// @dev Add `amount` (at most what `_outflowAllowed` returned, so the sum stays below 2**192)
    ///      to the current window's outflow of a capped token.
    function _recordOutflow(address token, uint256 amount) private {
        uint64 windowIndex = uint64(block.timestamp / outflowCaps[token].windowSeconds);
        OutflowUsage memory usage = outflowUsage[token];
        uint256 spent = usage.windowIndex == windowIndex ? usage.spent : 0;
        outflowUsage[token] = OutflowUsage(windowIndex, uint192(spent + amount));
    }

    /// @dev Pay one item; on failure emit `PaymentFailed(number, reason)` and return false.
    function _pay(address token, uint256 word0, uint256 amount, uint64 number) private returns (bool) {
        uint256 gasBefore = gasleft();
        (bool ok, bytes memory reason) = _transfer(token, address(uint160(word0)), amount);
        // A callee that ran out of gas leaves us at most 1/64 of what we had; a real revert
        // leaves far more. (A token that fails by burning all gas, like `invalid`, reverts too.)
        if (!ok && gasleft() < gasBefore / 63) revert TransferOutOfGas(number);
        if (!ok) emit PaymentFailed(number, reason);
        return ok;
    }

    /// @dev `token.transfer(to, amount)` that never reverts: success = the call succeeded and
    ///      returned nothing or exactly `true` (a malformed return counts as false). At most 32
    ///      bytes are copied on success and at most 256 bytes of revert data on failure, so a
    ///      hostile token cannot blow up memory with its return data.
    function _transfer(address token, address to, uint256 amount) private returns (bool ok, bytes memory reason) {
        uint256 returnSize;
        uint256 returnValue;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, shl(224, 0xa9059cbb)) // transfer(address,uint256)
            // Stack values of types narrower than 256 bits may carry dirty high bits: clean them.
            mstore(add(ptr, 4), and(to, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(ptr, 36), amount)
            ok := call(gas(), and(token, 0xffffffffffffffffffffffffffffffffffffffff), 0, ptr, 68, 0, 32)
            returnSize := returndatasize()
            returnValue := mload(0)
        }
        if (ok) {
            if (returnSize == 0 || (returnSize >= 32 && returnValue == 1)) return (true, "");
            return (false, "TRANSFER_RETURNED_FALSE");
        }
        assembly ("memory-safe") {
            let size := returndatasize()
            if gt(size, MAX_REASON_LENGTH) { size := MAX_REASON_LENGTH }
            reason := mload(0x40)
            mstore(reason, size)
            returndatacopy(add(reason, 32), 0, size)
            mstore(0x40, add(add(reason, 32), and(add(size, 31), not(31))))
        }
    }

    // -- owner ---------------------------------------------------------------------------------

    /// @notice Allow or disallow `operator` to call `payout`.
    function setOperator(address operator, bool allowed) external onlyOwner {
        operators[operator] = allowed;
        emit OperatorSet(operator, allowed);
    }

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    /// @notice Cap what `payout` may pay in `token` per fixed window of `windowSeconds`
    ///         (capPerWindow 0 removes the cap). A new window length starts a fresh window count.
    function setOutflowCap(address token, uint256 capPerWindow, uint64 windowSeconds) external onlyOwner nonReentrant {
        if (capPerWindow > type(uint192).max || (capPerWindow != 0 && windowSeconds == 0)) {
            revert InvalidOutflowCap(capPerWindow, windowSeconds);
        }
        if (outflowCaps[token].windowSeconds != windowSeconds) delete outflowUsage[token];
        outflowCaps[token] = OutflowCap(uint192(capPerWindow), windowSeconds);
        emit OutflowCapSet(token, capPerWindow, windowSeconds);
    }

    /// @notice Disabled: a vault without an owner could never be swept, unpaused or reconfigured.
    function renounceOwnership() public view override onlyOwner {
        revert RenounceOwnershipDisabled();
    }

    /// @notice Move `amount` of `token` out of the vault to `to` (e.g. back to the treasury).
    function sweep(address token, address to, uint256 amount) external onlyOwner nonReentrant {
        IERC20(token).safeTransfer(to, amount);
        emit Swept(token, to, amount);
    }
}
