"""The order-status templates a configuration declares (``templates:``): what ``templates
ensure`` creates on each Meta/YCloud account, one variant per locale. Plain validated data.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connector.core.config_problems import repeated


class _TemplateModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateVariantText(_TemplateModel):
    """One locale of an order-status template: its BODY and optional FOOTER text."""

    locale: str = Field(pattern=r"^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$")
    body: str = Field(min_length=1, max_length=1024)
    footer: str | None = Field(default=None, min_length=1, max_length=60)


class OrderStatusTemplate(_TemplateModel):
    """An order-status template (category UTILITY, sub-category ORDER_STATUS) that ``templates
    ensure`` creates, one variant per locale, on each Meta/YCloud account it names (None: all)."""

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    variants: list[TemplateVariantText] = Field(min_length=1)
    accounts: list[str] | None = None

    @model_validator(mode="after")
    def _one_variant_per_locale(self) -> OrderStatusTemplate:
        twice = repeated(v.locale for v in self.variants)
        if twice:
            raise ValueError(f"template {self.name}: locale repeated: {', '.join(twice)}")
        return self
