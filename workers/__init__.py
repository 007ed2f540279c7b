"""The model worker: loads models onto a device and serves them through modelyard.v1.Predict."""
