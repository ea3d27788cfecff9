"""CLI sub-commands, one module each (see `samplecnn.cli`)."""
