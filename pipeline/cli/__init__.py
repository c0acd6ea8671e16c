"""The command-line layer and composition root: commands, replay, produce, demo, brokers, topics."""
