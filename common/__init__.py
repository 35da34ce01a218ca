"""What the router and the server share beneath them: settings I/O (flags, env, YAML) and API keys.

Depends on the trainer client's wire contract at most; never on ``router`` or ``services``.
"""
