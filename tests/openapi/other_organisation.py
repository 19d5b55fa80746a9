"""A schemathesis check for a session of another organisation's admin: nothing of the
organisation it is not in may answer, neither its data (2xx) nor that it exists (403)."""

import schemathesis


@schemathesis.check
def finds_nothing_of_another_organisation(ctx, response, case):
    if "{org}" not in case.path:
        return
    status = response.status_code
    # 404 as if it did not exist; 401 to a request sent without the session (schemathesis tries
    # those too); a malformed request may be refused before the membership is read.
    if status in (401, 404) or status in (400, 405, 413, 415, 422):
        return
    raise AssertionError(f"{case.method} {case.formatted_path} answered {status} to another organisation's admin")
