"""The base of every settings section."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Section(BaseSettings):
    """A group of settings: unknown keys are refused, assignments validated. A pydantic-settings
    model, so that `segray.settings` merges a preset, files and the command line into it; it
    reads no environment variable."""

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **others):
        return (init_settings,)
