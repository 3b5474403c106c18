"""Black-box conformance tests: the real proxy process against a scripted fake OpenAI Realtime upstream."""
