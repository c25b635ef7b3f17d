"""Long notes whose one useful fact sits at the end, 1-3 KB past the model's window (about
1,100 characters of prose): what magray missed when it embedded only a text's first window.
Shared by tests/test_passages.py and scripts/bench_ingest.py."""

from __future__ import annotations

FILLER = [
    "Spent the morning repotting the tomato seedlings and moving the basil to the sunny sill.",
    "The electricity bill came in higher than last month, probably the space heater again.",
    "Called the plumber about the dripping tap in the upstairs bathroom; he can come Thursday.",
    "Finished the second chapter of the history book about the Hanseatic League trade routes.",
    "Went for a long run along the river; the new shoes still rub a little on the left heel.",
    "The team meeting ran over because the quarterly planning spreadsheet had broken formulas.",
    "Made a big pot of lentil soup with cumin, carrots and a squeeze of lemon at the end.",
    "Our neighbour's dog barked for an hour after the delivery van left the parcel on the steps.",
    "Renewed the library card and borrowed two novels and a guide to birds of the coast.",
    "The train was twenty minutes late, so I read the news about the city council elections.",
    "Cleaned out the gutters before the autumn storms; found a tennis ball from last summer.",
    "Booked the dentist for a check-up in March and moved the haircut to the week after.",
    "Tried a new bread recipe with rye flour and caraway seeds; the crust came out too hard.",
    "The printer at work jammed twice, and the replacement toner has still not arrived.",
    "Watched a documentary about deep sea vents and the strange animals that live there.",
    "Paid the insurance premium online and filed the receipt in the blue folder on the shelf.",
    "Helped my sister assemble a wardrobe; the instructions skipped the step with the hinges.",
    "The farmers' market had the first strawberries of the season, small but very sweet.",
    "Updated the laptop, which took forever, and then the video call software crashed anyway.",
    "Walked to the bakery in the rain and talked with the owner about her trip to Portugal.",
    "Sorted the recycling, flattened the boxes and took the glass bottles to the bank.",
    "Practised the piano piece for twenty minutes; the left hand in bar twelve is still slow.",
    "The cat knocked a mug off the table and then sat looking at me as if I had done it.",
    "Wrote a long email to the landlord about the heating schedule in the shared hallway.",
    "Read about the history of the bicycle and how the safety bicycle changed everything.",
    "Our book club picked a thick Russian novel for next month, which nobody will finish.",
    "Bought new light bulbs for the kitchen and noticed the smoke alarm needs a battery.",
    "Spent an hour untangling the garden hose and then it rained for the rest of the day.",
]

# (note, paraphrased query): the fact is the last sentence of the note
FACTS = [
    ("I hid the spare house key inside the fake grey rock beside the blue hydrangea next to "
     "the back porch steps.", "where did I hide the extra key to my home", 4600),
    ("The guest wifi password at the lake cabin is pinecone-forty-two, written inside the "
     "kitchen cupboard door.", "what is the wireless network password at the cabin", 3400),
    ("The car's winter tyres are stored in my brother's garage on Elm Street, behind the "
     "workbench.", "where are my snow tires kept", 2600),
    ("Dr. Alvarez confirmed that I am allergic to penicillin, so I must never take "
     "amoxicillin.", "which antibiotic medicine am I allergic to", 3900),
    ("My passport and birth certificate are in the fireproof box on the top shelf of the "
     "hall closet.", "where do I keep my passport and important documents", 3000),
]

SHORT = [
    "Bought a new keychain with a bottle opener at the hardware store.",
    "The office wifi is slow on Monday mornings when everyone syncs their files.",
    "Remember to check the tyre pressure before the long drive in spring.",
    "The pharmacy closes at six on Saturdays.",
    "Renew the car registration before the end of June.",
    "The back porch light flickers when it is cold outside.",
    "Water the hydrangeas twice a week during the summer.",
    "The cabin by the lake has a wood stove and no television.",
]


def long_note(fact: str, size: int, offset: int = 0) -> str:
    """About ``size`` characters of diary prose ending with ``fact``."""
    sentences: list[str] = []
    n = offset
    while sum(len(s) + 1 for s in sentences) + len(fact) < size:
        sentences.append(FILLER[n % len(FILLER)])
        n += 1
    paragraphs = [" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)]
    return "\n\n".join(paragraphs + [fact])


def notes() -> list[tuple[str, str]]:
    """(long note, query) for each fact."""
    return [(long_note(fact, size, 5 * i), query) for i, (fact, query, size) in enumerate(FACTS)]
