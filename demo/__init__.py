"""The Gradio app as small modules: `engine` (models, requests, cache, lock; no gradio),
`cache`, `report` (the metrics record), `progress`, and the gradio layer: `glue`
(upload, sessions, errors), `ui` (the page), `api` (named endpoints)."""
