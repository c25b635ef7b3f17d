"""Texts for search tests: notes a person would keep, paraphrased queries, and filler."""

import itertools

# (note, a paraphrase that shares few words with it)
NOTES = [
    ("use rg -uu to search files that .gitignore hides",
     "grep through ignored files too"),
    ("the staging database password rotates every first monday; ask ops for the new one",
     "when does the credential for the pre-production db change"),
    ("decision: we chose postgres over mongodb because we need transactions across tables",
     "why did we pick a relational store instead of a document database"),
    ("to undo the last git commit but keep the changes: git reset --soft HEAD~1",
     "revert my previous commit without losing my edits"),
    ("the coffee machine on the third floor needs descaling every two weeks",
     "how often should the espresso maker be cleaned of limescale"),
    ("kubectl rollout restart deployment/api restarts every pod of the api",
     "bounce all the containers of the backend service in the cluster"),
    ("bug: the invoice pdf renders euro amounts with a dollar sign",
     "currency symbol wrong on generated bills"),
    ("ssh-keygen -t ed25519 -C work makes a new key pair for the work laptop",
     "new keypair to log in to machines from my work computer"),
]

_SUBJECTS = ["my sister", "the neighbour", "our team", "the bakery", "a tourist", "the cat",
             "the orchestra", "the gardener", "a student", "the museum"]
_VERBS = ["planted", "painted", "visited", "cooked", "photographed", "repaired", "sold",
          "borrowed", "described", "celebrated"]
_OBJECTS = ["tulips by the river", "a blue fence", "the old lighthouse", "lentil soup",
            "a mountain sunrise", "a wooden chair", "fresh sourdough", "a bicycle with red tyres",
            "the history of jazz", "a birthday in june"]

FILLER = [f"{s} {v} {o}" for s, v, o in itertools.islice(
    itertools.product(_SUBJECTS, _VERBS, _OBJECTS), 0, 1000, 3)]

# Notes a person finds by an exact identifier, among near-twins that differ only in it.
IDENTIFIED = [
    ("pg_ctl restart -D /var/lib/postgresql/data restarts the local postgres", "pg_ctl"),
    ("ERR_OSSL_EVP_UNSUPPORTED means node 17 needs --openssl-legacy-provider",
     "ERR_OSSL_EVP_UNSUPPORTED"),
    ("set fs.inotify.max_user_watches=524288 when webpack stops noticing changes",
     "max_user_watches"),
    ("vendor invoice INV-20931 was paid twice in march", "INV-20931"),
    ("host db-7f3a runs the billing replica", "db-7f3a"),
    ("ticket OPS-4471: rotate the TLS certificate on the edge proxy", "OPS-4471"),
]
TWINS = ([f"vendor invoice INV-{20000 + 37 * i} was paid in {m}" for i, m in
          zip(range(40), itertools.cycle(["march", "april", "may", "june"]))]
         + [f"host db-{i:04x} runs the billing replica" for i in range(1000, 1040, 3)]
         + [f"ticket OPS-{4400 + i}: rotate the TLS certificate on the edge proxy"
            for i in range(0, 60, 7)])

_MORE_SUBJECTS = _SUBJECTS + ["the pilot", "grandpa", "the mayor", "a chef", "the intern"]
_MORE_VERBS = _VERBS + ["cleaned", "forgot", "ordered", "measured", "delivered"]
_MORE_OBJECTS = _OBJECTS + ["the server rack", "a broken umbrella", "three kilos of apples",
                            "the tax forms", "a vintage camera"]


def sentences(count: int) -> list[str]:
    """``count`` distinct, plausible short sentences (up to 3375)."""
    return [f"{s} {v} {o}" for s, v, o in itertools.islice(
        itertools.product(_MORE_SUBJECTS, _MORE_VERBS, _MORE_OBJECTS), count)]


QUERIES = [f"{s} {v} {o}" for s, v, o in itertools.islice(itertools.product(
    ["someone", "a friend", "the boss"], ["fixed", "bought", "saw"], _MORE_OBJECTS), 100)]
