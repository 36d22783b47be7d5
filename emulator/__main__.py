from emulator.cli import entrypoint

entrypoint()
