"""The web console: a static single-page app over the public REST and SSE API (docs/console.md)."""
