"""What FindMe does, as plain async functions that routes, the CLI and tests call.

Routes parse, authorise, call one of these and answer; nothing here knows about HTTP.
"""
