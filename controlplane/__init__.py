"""The control plane: membership, health, load and admin intent, and live endpoint sets."""
