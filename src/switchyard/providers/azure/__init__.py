"""Azure OpenAI provider (deployments, api-version, api-key header)."""
