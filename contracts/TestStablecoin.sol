// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Pausable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Pausable.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title TestStablecoin
/// @notice The project's local stand-in for USDC: an OpenZeppelin ERC20 with 6 decimals, minted by
///         its owner (the deployer), and pausable by its owner so tests can make transfers revert
///         (OpenZeppelin's `EnforcedPause()` error) the way a frozen or paused token would.
/// @dev For local chains and tests only. Nothing here is hand-tuned: all logic is OpenZeppelin's.
contract TestStablecoin is ERC20, ERC20Pausable, Ownable {
    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) Ownable(msg.sender) {}

    /// @notice USDC has 6 decimals; so does its stand-in.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Create `amount` base units for `to`. Owner only.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    /// @notice Make every transfer, mint and burn revert with `EnforcedPause()`. Owner only.
    function pause() external onlyOwner {
        _pause();
    }

    /// @notice Undo `pause`. Owner only.
    function unpause() external onlyOwner {
        _unpause();
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Pausable) {
        super._update(from, to, value);
    }
}
