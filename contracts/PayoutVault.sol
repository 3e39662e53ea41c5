// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title PayoutVault
/// @notice Holds the tokens it pays out and pays many withdrawals in one transaction, each exactly
///         once. Every withdrawal carries a unique 64-bit payout number; the payments of one
///         `payout` call carry consecutive numbers (`firstNumber`, `firstNumber + 1`, ...). A
///         bitmap (256 numbers per storage slot) records the numbers paid, and a number already
///         paid is skipped with `PaymentSkipped`. One failing transfer (a reverting or
///         false-returning token, an exceeded outflow cap) emits `PaymentFailed`, leaves its bit
///         unset and does not stop the others. One `PayoutExecuted` per call summarises it; the
///         token's own `Transfer` logs carry recipients and amounts.
/// @dev Roles: the owner (meant to be a Safe multisig) sets operators, pauses, sets outflow caps and
///      sweeps; operators (hot wallets) may only call `payout`. The vault never approves anything.
///      Within `payout` the bitmap word of the current slot is cached on the stack and written
///      back once per slot (consecutive numbers visit each slot once); `nonReentrant` (on every
///      state-changing function) makes that safe, since no callback from a token can reach the
///      bitmap or the outflow accounting.
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
    uint256 private constant ADDRESS_MASK = (1 << 160) - 1;
    /// @dev `transfer(address,uint256)` left-aligned in a word.
    uint256 private constant TRANSFER_SELECTOR = 0xa9059cbb << 224;

    /// @notice Bit `n % 256` of word `n / 256` is set when payout number `n` has been paid.
    mapping(uint256 slot => uint256 word) public paidBitmap;
    /// @notice Accounts (hot wallets) allowed to call `payout`.
    mapping(address account => bool allowed) public operators;
    /// @notice Per-token outflow cap (capPerWindow 0 = none).
    mapping(address token => OutflowCap cap) public outflowCaps;
    /// @notice Per-token outflow in its current window.
    mapping(address token => OutflowUsage usage) public outflowUsage;

    /// @notice One per `payout` call: `count` payments given (numbers `firstNumber` to
    ///         `firstNumber + count - 1`), `paid` of them paid now, for a total of `totalAmount`
    ///         base units.
    event PayoutExecuted(address indexed token, uint64 firstNumber, uint32 count, uint32 paid, uint256 totalAmount);
    /// @notice Payment `number` was already paid earlier; not paid again.
    event PaymentSkipped(uint64 indexed number);
    /// @notice Payment `number` was not paid and its bit stays unset: `reason` is the token's revert
    ///         data (at most 256 bytes, possibly empty), "TRANSFER_RETURNED_FALSE" or "OUTFLOW_CAP".
    event PaymentFailed(uint64 indexed number, bytes reason);
    event OperatorSet(address indexed operator, bool allowed);
    event OutflowCapSet(address indexed token, uint256 capPerWindow, uint64 windowSeconds);
    event Swept(address indexed token, address indexed to, uint256 amount);

    error NotOperator(address account);
    /// @notice A payout needs at least one payment and at most 2**32 - 1 (`count` is a uint32).
    error InvalidPaymentCount(uint256 count);
    /// @notice The last number, `firstNumber + count - 1`, does not fit in 64 bits.
    error PayoutNumberOverflow(uint64 firstNumber, uint256 count);
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

    /// @notice Pay `payments[i]` under payout number `firstNumber + i` with `token.transfer`,
    ///         skipping numbers already paid. One word per payment: `amount << 160 | recipient`
    ///         (so amounts are below 2**96).
    function payout(address token, uint64 firstNumber, uint256[] calldata payments)
        external
        onlyOperator
        whenNotPaused
        nonReentrant
    {
        if (payments.length == 0 || payments.length > type(uint32).max) {
            revert InvalidPaymentCount(payments.length);
        }
        // No overflow: both terms are below 2**64.
        uint256 end = uint256(firstNumber) + payments.length; // one past the last number
        if (end > uint256(type(uint64).max) + 1) revert PayoutNumberOverflow(firstNumber, payments.length);
        if (token.code.length == 0) revert TokenNotContract(token);

        // What the outflow cap still allows in this window; max uint256 (caps are < 2**192) if none.
        uint256 allowed = _outflowAllowed(token);
        uint256 remaining = allowed; // what is still allowed after the amounts paid now
        uint256 paid;
        uint256 number = firstNumber;
        uint256 word = paidBitmap[number >> 8]; // the bitmap word of the current slot, cached
        bool dirty;
        // `payments.offset` serves as the cursor: the calldata position of payment `number`.
        while (true) {
            uint256 payment;
            assembly ("memory-safe") {
                payment := calldataload(payments.offset)
            }
            if (word & (1 << (number & 0xff)) != 0) {
                emit PaymentSkipped(uint64(number));
            } else if (_pay(token, payment, uint64(number), remaining)) {
                // The bit is set only once the transfer succeeded.
                word |= 1 << (number & 0xff);
                dirty = true;
                unchecked {
                    ++paid;
                    remaining -= payment >> 160; // the amount, at most `remaining`
                }
            }
            unchecked {
                ++number; // <= end <= 2**64
            }
            if (number == end) break;
            assembly ("memory-safe") {
                payments.offset := add(payments.offset, 32)
            }
            if (number & 0xff == 0) {
                // Entering the next slot: write the finished one back (once) and load the next.
                if (dirty) {
                    unchecked {
                        paidBitmap[(number >> 8) - 1] = word;
                    }
                    dirty = false;
                }
                word = paidBitmap[number >> 8];
            }
        }
        if (dirty) paidBitmap[(end - 1) >> 8] = word;
        uint256 total;
        unchecked {
            total = allowed - remaining; // the sum of the amounts paid now
        }
        if (allowed != type(uint256).max) _recordOutflow(token, total);
        emit PayoutExecuted(token, firstNumber, uint32(payments.length), uint32(paid), total);
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

    /// @dev Pay one item, `payment` = amount << 160 | recipient, with `token.transfer(to, amount)`
    ///      if the amount is at most `remaining` (what the outflow cap still allows); never reverts
    ///      except on running out of gas. Success = the call succeeded and returned
    ///      nothing or a word equal to 1 (a malformed return counts as false). On failure emit
    ///      `PaymentFailed(number, reason)` and return false. At most 32 bytes of return data are
    ///      copied on success and at most 256 bytes of revert data on failure, so a hostile token
    ///      cannot blow up memory with its return data. Nothing is allocated on the success path.
    function _pay(address token, uint256 payment, uint64 number, uint256 remaining) private returns (bool) {
        if (payment >> 160 > remaining) {
            emit PaymentFailed(number, "OUTFLOW_CAP");
            return false;
        }
        uint256 gasBefore = gasleft();
        bool ok;
        bool returnedTrue;
        assembly ("memory-safe") {
            // Scratch memory past the free memory pointer, not allocated (nothing else uses it
            // before the call returns).
            let ptr := mload(0x40)
            mstore(ptr, TRANSFER_SELECTOR)
            mstore(add(ptr, 4), and(payment, ADDRESS_MASK))
            mstore(add(ptr, 36), shr(160, payment))
            ok := call(gas(), token, 0, ptr, 68, 0, 32)
            let size := returndatasize()
            returnedTrue := or(iszero(size), and(gt(size, 31), eq(mload(0), 1)))
        }
        if (ok) {
            if (returnedTrue) return true;
            emit PaymentFailed(number, "TRANSFER_RETURNED_FALSE");
            return false;
        }
        // A callee that ran out of gas leaves us at most 1/64 of what we had; a real revert
        // leaves far more. (A token that fails by burning all gas, like `invalid`, reverts too.)
        if (gasleft() < gasBefore / 63) revert TransferOutOfGas(number);
        bytes memory reason;
        assembly ("memory-safe") {
            let size := returndatasize()
            if gt(size, MAX_REASON_LENGTH) { size := MAX_REASON_LENGTH }
            reason := mload(0x40)
            mstore(reason, size)
            returndatacopy(add(reason, 32), 0, size)
            mstore(0x40, add(add(reason, 32), and(add(size, 31), not(31))))
        }
        emit PaymentFailed(number, reason);
        return false;
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
