"""Signing in (locked after repeated failures by django-axes), re-authentication and the tenant switcher."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import authenticate
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from cms.web.access import SESSION_TENANT, mark_recent_auth, safe_next, tenant_choices


class LoginView(auth_views.LoginView):
    template_name = "web/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        mark_recent_auth(self.request)  # the password was just given
        return response


class LogoutView(auth_views.LogoutView):
    next_page = "web:login"


class PasswordForm(forms.Form):
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password",
                                                                 "autofocus": True}))


@login_required
def reauth(request):
    """Ask for the password again; the same lockout counts failures here as at sign-in."""
    form = PasswordForm(request.POST or None)
    back = safe_next(request, reverse("web:dashboard"))
    if request.method == "POST" and form.is_valid():
        user = authenticate(request, username=request.user.get_username(),
                            password=form.cleaned_data["password"])
        if user is not None and user.pk == request.user.pk:
            mark_recent_auth(request)
            messages.success(request, "Password confirmed. Repeat the action to carry it out.")
            return redirect(back)
        form.add_error("password", "wrong password")
    return render(request, "web/reauth.html", {"form": form, "next": back})


@login_required
@require_POST
def switch_tenant(request):
    wanted = request.POST.get("tenant", "")
    allowed = {str(t.pk): t for t, _ in tenant_choices(request.user)}
    if wanted not in allowed:
        raise Http404("no such tenant")
    request.session[SESSION_TENANT] = allowed[wanted].pk
    messages.info(request, f"Now working in tenant {allowed[wanted].slug}.")
    return redirect(safe_next(request, reverse("web:dashboard")))
