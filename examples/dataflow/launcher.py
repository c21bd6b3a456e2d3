"""Flex Template launcher: runs the job with the template's parameters and exits with its status."""
import sys

from pipeline.main import main

if __name__ == "__main__":
    sys.exit(main())
