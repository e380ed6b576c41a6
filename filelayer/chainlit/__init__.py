"""The Chainlit adapter: the data layer, its element route and the event-loop offload."""
