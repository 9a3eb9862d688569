"""The admin API's wire models: what the edges parse (HTTP bodies, CLI options rendered as the
same JSON) and the admin services validate, and the one JSON merge patch."""

from switchyard.protocol.admin.bodies import merge_patch, validate
from switchyard.protocol.admin.credentials import CreateCredential
from switchyard.protocol.admin.keys import CreateKey, KeySettings, key_settings_json
from switchyard.protocol.admin.limits import BudgetSpec, budget_json, model_limits, rate_limits
from switchyard.protocol.admin.teams import TeamSpec, team_settings_json

__all__ = [
    "BudgetSpec",
    "CreateCredential",
    "CreateKey",
    "KeySettings",
    "TeamSpec",
    "budget_json",
    "key_settings_json",
    "merge_patch",
    "model_limits",
    "rate_limits",
    "team_settings_json",
    "validate",
]
