"""The faust shell: the app, its agents, and the web views; each file short."""
