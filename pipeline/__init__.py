"""The core: pure logic (no Kafka client, no faust) and, apart, the command-line layer."""
