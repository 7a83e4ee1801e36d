"""Writers of the run's reports: JSON, JUnit XML, the GitHub job summary and the terminal table."""
