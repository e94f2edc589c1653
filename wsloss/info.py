"""python -m wsloss.info: prints wsloss.show_config() (versions, compiled backends, CUDA archs, threads)."""
from ._config import show_config

if __name__ == "__main__":
    show_config()
