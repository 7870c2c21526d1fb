"""The admin page of API tokens: create one (shown once), change its scopes, revoke it.

Kept apart from ``admin.py`` (the tasks' pages) and registered from ``apps.ready``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from . import tokens
from .models import ApiToken
from .tokens import Scope

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ApiToken]
    _ModelForm = forms.ModelForm[ApiToken]
else:
    _ModelAdmin = admin.ModelAdmin
    _ModelForm = forms.ModelForm


class ApiTokenForm(_ModelForm):
    """The scopes as checkboxes; the table keeps them comma-separated."""

    scope_choices = forms.MultipleChoiceField(
        label="Scopes",
        choices=[(scope.value, scope.value) for scope in Scope],
        widget=forms.CheckboxSelectMultiple,
        help_text="submit: add tasks; read: tasks and the scheduler's state; "
        "operate: close, open and retry.",
    )

    class Meta:
        model = ApiToken
        fields = ("name", "expires_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["scope_choices"] = sorted(tokens.scopes_of(self.instance))

    def clean_scope_choices(self) -> str:
        return tokens.format_scopes(
            tokens.parse_scopes(self.cleaned_data["scope_choices"])
        )

    def save(self, commit: bool = True) -> ApiToken:
        self.instance.scopes = self.cleaned_data["scope_choices"]
        return super().save(commit)


@admin.register(ApiToken)
class ApiTokenAdmin(_ModelAdmin):
    form = ApiTokenForm
    list_display = (
        "name",
        "prefix",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "^prefix")
    readonly_fields = ("prefix", "created_at", "revoked_at")
    actions = ("revoke",)

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: Any, change: bool
    ) -> None:
        if not change:
            # Kept on the request only until response_add shows it: never in a
            # message, which would carry it through a cookie.
            request._new_api_token = tokens.issue_secret(obj)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token created",
            "token_row": obj,
            "token": getattr(request, "_new_api_token", ""),
        }
        return TemplateResponse(
            request, "admin/tasks_app/apitoken/token_created.html", context
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = tokens.revoke(queryset)
        self.message_user(
            request,
            f"Revoked {revoked} token(s); calls with them now answer 401.",
            messages.SUCCESS,
        )
