"""Development tools: the local Kafka broker, the provider sandbox, the demo and its workload."""
