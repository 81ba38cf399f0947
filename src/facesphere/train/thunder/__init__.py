"""Training of the ThunderNet face detector (`facesphere train-detector`)."""
