"""The reference staging target: the application a local rehearsal deploys and tests."""
