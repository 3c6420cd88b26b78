"""Sign-outs and failed sign-ins outlive the process: they are kept in the run log's
database, so a restart (or another `serve` on the same database) honours them (issue #15)."""

from __future__ import annotations

from klingflow.service.attempts import MAX_FAILED_ATTEMPTS

from ..loopback import loopback_client
from .conftest import API_TOKEN, StartService
from .test_login_security import csrf, sign_in


def test_a_signed_out_cookie_stays_dead_after_a_restart(start_service: StartService) -> None:
    """Sign in, copy the cookie, sign out, restart the service on the same database: the copy
    opens no page, while a fresh sign-in still works."""
    first = start_service(api_token=API_TOKEN)
    with loopback_client(first.url) as browser:
        assert sign_in(browser).status_code == 303
        copied = dict(browser.cookies)
        assert browser.post("/logout", data={"csrf_token": csrf(browser, "/runs")}).is_redirect
    first.stop()
    second = start_service(api_token=API_TOKEN)
    with loopback_client(second.url, cookies=copied) as thief:
        response = thief.get("/runs")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")
    with loopback_client(second.url) as owner:
        assert sign_in(owner).status_code == 303
        assert owner.get("/runs").status_code == 200


def test_failed_sign_ins_are_still_counted_after_a_restart(start_service: StartService) -> None:
    """A guesser who hit the limit is not let off by a restart of the service."""
    first = start_service(api_token=API_TOKEN)
    with loopback_client(first.url) as guesser:
        codes = [
            guesser.get("/api/runs", headers={"Authorization": f"Bearer guess-{n}"}).status_code
            for n in range(MAX_FAILED_ATTEMPTS)
        ]
    assert codes == [401] * MAX_FAILED_ATTEMPTS
    first.stop()
    second = start_service(api_token=API_TOKEN)
    with loopback_client(second.url) as guesser:
        blocked = guesser.get("/api/runs", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert blocked.status_code == 429
        assert sign_in(guesser).status_code == 429
