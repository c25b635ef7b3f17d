"""A labelled set for magray's credential detection (magray/secrets.py).

``SECRETS``: (kind, text, secret) — realistic but FAKE credentials (random characters from a
fixed seed, in the real formats) inside shell commands, config snippets and prose; ``secret``
is the exact string that must not survive. ``LOOKALIKES``: texts that must be stored as they
are: hashes, ids, checksums, base64 data, documented example keys, prose about passwords,
variable names and placeholders without values.

scripts/eval_secrets.py prints precision and recall per kind over this set; tests pin a
representative subset.
"""

from __future__ import annotations

import base64
import json
import random
import string

_rng = random.Random(16)
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"


def _r(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _jwt(claims: dict) -> str:
    return f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{_b64url(claims)}.{_r(URLSAFE, 43)}"


def _pem(label: str) -> str:
    body = "\n".join(_r(B64, 64) for _ in range(6))
    return f"-----BEGIN {label}-----\n{body}\n{_r(B64, 20)}==\n-----END {label}-----"


def _secrets() -> list[tuple[str, str, str]]:
    s: list[tuple[str, str, str]] = []

    def add(kind: str, template: str, secret: str) -> None:
        s.append((kind, template.format(s=secret), secret))

    # private keys (the whole block must go)
    for label, where in [("RSA PRIVATE KEY", "deploy key for the ci runner:\n{s}"),
                         ("OPENSSH PRIVATE KEY", "cat ~/.ssh/id_ed25519\n{s}"),
                         ("PRIVATE KEY", '{{"type": "service_account", "private_key": "{s}"}}'),
                         ("EC PRIVATE KEY", "tls.key for staging:\n{s}\nremember to rotate")]:
        add("private-key", where, _pem(label))
    # AWS
    for t in ["export AWS_ACCESS_KEY_ID={s}", "aws_access_key_id = {s}",
              "the old key {s} was leaked in a gist, rotated it",
              "AWS_ACCESS_KEY_ID: {s} in the github actions env"]:
        add("aws-access-key", t, "AKIA" + _r(UPPER_DIGITS, 16))
    add("aws-access-key", "temporary creds ASIA{s} expire in 1h", _r(UPPER_DIGITS, 16))
    for t in ["export AWS_SECRET_ACCESS_KEY={s}", "aws_secret_access_key = {s}",
              'AWS_SECRET_ACCESS_KEY: "{s}"', "aws configure set aws_secret_access_key {s}"]:
        add("aws-secret-key", t, _r(B64, 40))
    # GCP
    for t in ["curl 'https://maps.googleapis.com/maps/api/geocode/json?key={s}'",
              "GOOGLE_API_KEY={s}", "the firebase web key is {s}, restricted to our domain"]:
        add("gcp-api-key", t, "AIza" + _r(URLSAFE, 35))
    # Azure
    for t in ["DefaultEndpointsProtocol=https;AccountName=prodlogs;AccountKey={s};"
              "EndpointSuffix=core.windows.net",
              "az storage blob list --connection-string 'AccountName=x;AccountKey={s}'"]:
        add("azure-storage-key", t, "AccountKey=" + _r(B64, 86) + "==")
    for t in ["AZURE_CLIENT_SECRET={s}", "the app registration secret is {s} (expires 2026)"]:
        add("azure-client-secret", t, _r(ALNUM, 3) + "8Q~" + _r(ALNUM + "_-.", 34))
    # GitHub / GitLab
    for t in ['curl -H "Authorization: token {s}" https://api.github.com/user',
              "git clone https://{s}@github.com/acme/infra.git",
              "export GITHUB_TOKEN={s}", "GH_TOKEN={s} gh pr list",
              "new PAT for the release bot: {s}"]:
        add("github-token", t, "ghp_" + _r(ALNUM, 36))
    add("github-token", "gh auth login --with-token <<< {s}", "github_pat_" + _r(ALNUM, 22)
        + "_" + _r(ALNUM, 59))
    for t in ["export GITLAB_TOKEN={s}", "glab auth login --token {s}",
              "CI uses the project token {s} to push tags"]:
        add("gitlab-token", t, "glpat-" + _r(URLSAFE, 20))
    # Slack
    for t in ["SLACK_BOT_TOKEN={s}", "slack bot token {s} for #alerts",
              "curl -d token={s} https://slack.com/api/auth.test"]:
        add("slack-token", t, f"xoxb-{_r(string.digits, 12)}-{_r(string.digits, 13)}-"
                              f"{_r(string.ascii_lowercase + string.digits, 24)}")
    add("slack-token", "webhook for deploy notices: {s}",
        f"https://hooks.slack.com/services/T{_r(UPPER_DIGITS, 8)}/B{_r(UPPER_DIGITS, 10)}/"
        f"{_r(ALNUM, 24)}")
    # Stripe
    for t in ["STRIPE_SECRET_KEY={s}", "stripe listen --api-key {s}",
              "the live stripe key {s} is only on the payments box"]:
        add("stripe-key", t, "sk_live_" + _r(ALNUM, 24))
    add("stripe-key", "test mode key: {s}", "sk_test_" + _r(ALNUM, 24))
    # OpenAI / Anthropic
    for t in ["export OPENAI_API_KEY={s}", "openai.api_key = '{s}'"]:
        add("openai-key", t, "sk-" + _r(ALNUM, 20) + "T3BlbkFJ" + _r(ALNUM, 20))
    add("openai-key", "OPENAI_API_KEY={s} python eval.py", "sk-proj-" + _r(URLSAFE, 48))
    add("openai-key", "project key for the eval harness: {s}", "sk-proj-" + _r(URLSAFE, 56))
    for t in ["export ANTHROPIC_API_KEY={s}",
              "claude key {s} belongs to the research workspace",
              'curl https://api.anthropic.com/v1/messages -H "x-api-key: {s}"']:
        add("anthropic-key", t, "sk-ant-api03-" + _r(URLSAFE, 93) + "AA")
    # npm / PyPI
    for t in ["//registry.npmjs.org/:_authToken={s}", "NPM_TOKEN={s} npm publish"]:
        add("npm-token", t, "npm_" + _r(ALNUM, 36))
    for t in ["twine upload -u __token__ -p {s} dist/*", "[pypi]\nusername = __token__\n"
              "password = {s}", "PYPI_API_TOKEN={s}"]:
        add("pypi-token", t, "pypi-AgEIcHlwaS5vcmc" + _r(URLSAFE, 140))
    # JWTs
    for t in ['curl -H "Authorization: Bearer {s}" https://api.internal/v1/me',
              "session cookie was {s}", "id_token={s}"]:
        add("jwt", t, _jwt({"sub": _r(string.digits, 8), "name": "Dana", "iat": 1735689600}))
    # passwords in URLs and connection strings
    for t, pw in [("psql postgres://admin:{s}@db.internal:5432/prod", _r(ALNUM, 14)),
                  ("DATABASE_URL=mysql://app:{s}@10.0.3.7/shop", _r(ALNUM, 16)),
                  ("redis-cli -u redis://default:{s}@cache:6379", _r(ALNUM, 20)),
                  ("mongodb+srv://backup:{s}@cluster0.mongodb.net/admin", _r(ALNUM, 12)),
                  ("pip install --index-url https://ci:{s}@pypi.acme.dev/simple pkg",
                   _r(ALNUM, 18))]:
        add("url-password", t, pw)
    for t, pw in [("Server=sql01;Database=Sales;User Id=sa;Password={s};", "Tr0ub4dor&3x"),
                  ("Host=pg;Username=app;Password={s};SSL Mode=Require", _r(ALNUM, 15)),
                  ("Data Source=.\\SQLEXPRESS;Initial Catalog=ops;Pwd={s};", _r(ALNUM, 12))]:
        add("connection-string-password", t, pw)
    # password= / secret: assignments, flags and prose
    for t, pw in [("DB_PASSWORD={s}", "s3cr3t-Pa55!"),
                  ("password: {s}", "correct-horse-7"),
                  ('"client_secret": "{s}"', _r(ALNUM, 32)),
                  ("secret_key = '{s}'", _r(ALNUM + "!@#%^", 40)),
                  ("mysql -u root -p{s} shop", "Hunter2hunter"),
                  ("SECRET_TOKEN={s}", _r(HEX, 32)),
                  ("the staging db password is {s} until friday", "Winter2024!"),
                  ("docker run -e POSTGRES_PASSWORD={s} postgres:16", "pgAdm1n-99"),
                  ("api_key: {s}", _r(ALNUM, 28)),
                  ("vault write secret/app password={s}", "Zq8#kLm2vP")]:
        add("password", t, pw)
    # Authorization headers
    for t, tok in [('curl -H "Authorization: Bearer {s}" https://api.acme.dev', _r(ALNUM, 40)),
                   ("Authorization: Basic {s}", base64.b64encode(b"deploy:" + _r(ALNUM, 12)
                                                                  .encode()).decode()),
                   ("http GET api.acme.dev/v2/orders 'X-Api-Key: {s}'", _r(HEX, 32)),
                   ("PRIVATE-TOKEN: {s}", _r(ALNUM, 20))]:
        add("authorization-header", t, tok)
    return s


def _lookalikes() -> list[str]:
    texts = [
        # git, ids, checksums
        *[f"git cherry-pick {_r(HEX, 40)}" for _ in range(4)],
        *[f"fixed in commit {_r(HEX, 7)}, see PR #{n}" for n in (812, 1024, 77)],
        *[f"git revert {_r(HEX, 12)} broke the build again" for _ in range(2)],
        *[f"sha256sum: {_r(HEX, 64)}  magray-0.4.tar.gz" for _ in range(4)],
        *[f"expected checksum sha256:{_r(HEX, 64)}" for _ in range(2)],
        *[f"docker pull ghcr.io/acme/api@sha256:{_r(HEX, 64)}" for _ in range(2)],
        *[f"request id {_r(HEX, 8)}-{_r(HEX, 4)}-4{_r(HEX, 3)}-a{_r(HEX, 3)}-{_r(HEX, 12)} "
          "timed out" for _ in range(4)],
        *[f"user_id: {_r(HEX, 8)}-{_r(HEX, 4)}-{_r(HEX, 4)}-{_r(HEX, 4)}-{_r(HEX, 12)}"
          for _ in range(2)],
        *[f"md5 of the dump is {_r(HEX, 32)}" for _ in range(2)],
        f"integrity sha512-{_r(B64, 86)}== in package-lock.json",
        "npm ci --prefer-offline uses the lockfile integrity hashes",
        # base64 payloads
        *[f'<img src="data:image/png;base64,{_r(B64, 120)}=">' for _ in range(3)],
        f"favicon: data:image/x-icon;base64,{_r(B64, 200)}",
        f"the protobuf blob was {_r(B64, 64)}== (decoded fine)",
        "echo aGVsbG8gd29ybGQ= | base64 -d",
        # documented example keys
        "AWS docs use AKIAIOSFODNN7EXAMPLE as the access key id",
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY  # from the docs",
        # prose about passwords and secrets
        "password reset link sent to the user",
        "the password reset flow emails a one-time link",
        "rotate the database password every 90 days",
        "never commit secrets; use the vault instead",
        "Forgot password? page returns 500 on Safari",
        "users complain the password field is too short",
        "password: required (min 12 chars)",
        "the secret sauce is caching the tokenizer",
        "token bucket rate limiter: 100 requests per minute",
        "tokens per second dropped after the upgrade",
        "access token expiry is 15 minutes, refresh token 30 days",
        "set the API key in the dashboard, not in code",
        "the private key never leaves the HSM",
        "ssh-keygen -t ed25519 -C 'dana@laptop' creates the key pair",
        "cat ~/.ssh/id_ed25519.pub >> authorized_keys",
        "gpg --armor --export dana@example.com",
        "password is the wrong word here; passphrase is better",
        "password is required",
        "the secret is to batch the writes",
        "api keys live in 1password under 'infra'",
        "Authorization header is missing on the preflight request",
        "curl returned 401 Unauthorized without the Authorization header",
        "use Authorization: Bearer <token> as described in the docs",
        "stripe webhooks need the signing secret from the dashboard",
        "generate a GitHub token with repo scope for the release job",
        "slack tokens start with xoxb- for bots",
        "keys starting with sk_live_ are production stripe keys",
        "JWTs have three base64url parts separated by dots",
        # variable names and placeholders without values
        "export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY",
        "export GITHUB_TOKEN=${GITHUB_TOKEN}",
        "password = os.environ['DB_PASSWORD']",
        "password=getpass.getpass()",
        "DB_PASSWORD=<your-password>",
        "api_key: {{ vault_api_key }}",
        "secret: ${{ secrets.DEPLOY_KEY }}",
        'token = "..."',
        "password = None",
        "password: ********",
        "PASSWORD=changeme in the example .env",
        "password=xxxxxxxx",
        "client_secret: YOUR_CLIENT_SECRET",
        "SECRET_KEY = DJANGO_SECRET_KEY",
        "api_key=self.api_key",
        "token: string (required)",
        "def check_password(password: str) -> bool:",
        "if password == confirm_password:",
        "self.password = password",
        "kwargs['password'] = args.password",
        "psql postgres://admin@db.internal:5432/prod",
        "postgres://user:${PGPASSWORD}@db/prod",
        "mysql -u root -p shop",
        "ssh -p 2222 deploy@bastion",
        "https://example.com:8443/path?query=1",
        "http://localhost:8000/docs",
        "redis://cache:6379/0",
        "Server=sql01;Database=Sales;Integrated Security=true;",
        "Password=;Trusted_Connection=yes;",
        # ordinary shell and notes that contain key-ish words
        "kubectl get secrets -n prod",
        "kubectl create secret generic db --from-file=./password.txt",
        "gh secret set DEPLOY_KEY < key.txt",
        "pass show work/vpn",
        "passwd dana",
        "the keyboard shortcut is ctrl-k",
        "monkey patch the keyring backend in tests",
        "ssh-add -l lists the loaded keys",
        "openssl rand -hex 32 makes a good secret",
        "sk-learn is not a package, scikit-learn is",
        "the AIza prefix marks Google API keys",
        "ghp_ is the prefix of classic github tokens",
        "pypi- tokens are scoped per project",
        "npm_ tokens replaced the old hex tokens",
        "eyJ is what base64 of '{\"' looks like",
        "the word 'token' appears 300 times in the tokenizer docs",
        "compaction of tokens in the KV cache saves memory",
        "keyword search works with -p for phrases",
        "tar -xzf backup.tar.gz -C /srv",
        "rg -uu --hidden 'TODO' src/",
        "python -m pytest -p no:cacheprovider -q",
        "docker run -p 8080:80 nginx",
        "uuidgen | tr A-Z a-z",
        "the meeting id is 845 2231 9910, passcode on the calendar invite",
        "version 3.12.7 (build 9f2c1e0d) released",
        "ASIN B00EXAMPLE is the kindle edition",
        "the AKIA prefix means a long-term key, ASIA a temporary one",
        "temperature=0.7 top_p=0.9 max_tokens=512",
        "max_tokens: 4096",
        "key: value pairs in YAML are unordered",
        "primary_key=id in the ORM mapping",
        "sort_key = lambda r: r.created_at",
        "cache_key = f'{user}:{page}'",
        "--password-file /run/secrets/db",
        "secret_ref: vault://kv/prod/db#password",
    ]
    return texts


SECRETS: list[tuple[str, str, str]] = _secrets()
LOOKALIKES: list[str] = _lookalikes()
KINDS: tuple[str, ...] = tuple(dict.fromkeys(kind for kind, _, _ in SECRETS))
