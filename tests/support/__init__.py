"""Process fixtures and clients shared by the test suite."""
