"""A real SMTP server for the tests (aiosmtpd on 127.0.0.1): keeps every message it takes, can go down and come back
on its port, and can ask for a login."""

from email import message_from_bytes, policy

from aiosmtpd.smtp import AuthResult

from paygate.standins import mail


class Mailbox:
    """The operators' mail server: `messages` the e-mails taken (EmailMessage), `logins` the users logged in."""

    def __init__(self, user: str | None = None, password: str | None = None):
        self.messages, self.logins, self.raw = [], [], []
        self.credentials = (user, password)
        self.port = 0
        self.start_again()

    def start_again(self) -> None:
        """Up (again, on the same port)."""
        options = {}
        if self.credentials[0]:
            options = {"authenticator": self._check, "auth_require_tls": False, "auth_required": True}
        self.server = mail.Server(self, self.port, **options)
        self.port = self.server.port

    def stop(self) -> None:
        """Down: connections to its port are refused."""
        self.server.stop()

    def url(self, scheme_and_login: str = "smtp://") -> str:
        return f"{scheme_and_login}127.0.0.1:{self.port}"

    def _check(self, server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        raw = envelope.original_content or envelope.content
        self.raw.append(raw)
        self.messages.append(message_from_bytes(raw, policy=policy.default))
        return "250 OK"
