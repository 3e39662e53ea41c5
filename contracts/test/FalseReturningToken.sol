// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title FalseReturningToken
/// @notice Test-only: a minimal ERC-20-like token whose `transfer` returns `false` (and moves
///         nothing) instead of reverting when the amount is above `transferLimit` or the recipient
///         is flagged, the way some old tokens signal failure. Anyone may mint; 6 decimals.
///         `setRevertData` makes every transfer revert with exactly the given bytes instead
///         (to test how callers handle empty or oversized revert data).
contract FalseReturningToken {
    string public constant name = "False USD";
    string public constant symbol = "FUSD";
    uint8 public constant decimals = 6;

    uint256 public totalSupply;
    uint256 public transferLimit = type(uint256).max;
    mapping(address account => uint256) public balanceOf;
    mapping(address account => bool) public flagged;
    bytes public revertData;

    event Transfer(address indexed from, address indexed to, uint256 value);

    function mint(address to, uint256 amount) external {
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function setTransferLimit(uint256 limit) external {
        transferLimit = limit;
    }

    function setFlagged(address account, bool value) external {
        flagged[account] = value;
    }

    function setRevertData(bytes calldata data) external {
        revertData = data;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        bytes memory data = revertData;
        if (data.length != 0) {
            assembly ("memory-safe") {
                revert(add(data, 32), mload(data))
            }
        }
        if (amount > transferLimit || flagged[to] || balanceOf[msg.sender] < amount) return false;
        balanceOf[msg.sender] -= amount;
        balanceOf[to] += amount;
        emit Transfer(msg.sender, to, amount);
        return true;
    }
}
