"""Developer tools: broker runners for tests, benchmarks and the demo, and the demo. Never imported by gateway/."""
