"""What goes out with a trained model: its model card (`final/README.md`) and the push to the hub."""
