"""The commands: one module per command (`bin/<name>`, `kcaptcha-<name>`), each mapping its flags to a
`Config` or arguments, calling one library function and printing a clear message; `common` holds what they
share (exit codes, one-line errors, the model-reading flags)."""
