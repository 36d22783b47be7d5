"""HTTP surface of the emulator: thin handlers over `emulator.state.Emulator`."""
