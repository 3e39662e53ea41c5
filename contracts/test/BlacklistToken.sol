// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title BlacklistToken
/// @notice Test-only: a 6-decimal OpenZeppelin ERC20 whose transfers to a blacklisted recipient
///         revert with `RecipientBlacklisted(recipient)`, like USDC's blacklist. Owner-mintable.
contract BlacklistToken is ERC20, Ownable {
    mapping(address account => bool) public blacklisted;

    event BlacklistSet(address indexed account, bool blacklisted);

    error RecipientBlacklisted(address recipient);

    constructor() ERC20("Blacklist USD", "BLUSD") Ownable(msg.sender) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    function setBlacklisted(address account, bool value) external onlyOwner {
        blacklisted[account] = value;
        emit BlacklistSet(account, value);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (blacklisted[to]) revert RecipientBlacklisted(to);
        super._update(from, to, value);
    }
}
