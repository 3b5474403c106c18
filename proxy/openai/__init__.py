"""The ``/openai`` route: the component protocol translated to the OpenAI Realtime GA API (sans-IO)."""

from .session_update import build_session, session_update_event, uses_server_vad
from .translator import Translator, TranslatorOptions

__all__ = ["Translator", "TranslatorOptions", "build_session", "session_update_event", "uses_server_vad"]
