"""Short factual questions with known answers, written for patchkit: a capability check.

A safety patch must not make the model dumber. Each question has one short answer and its
accepted spellings; `is_correct` looks for any of them as whole words in the reply (numbers
also as digits). Our own text; split by hash: `factual:test` is what reports quote, the
validation part may guide checkpoint selection, and no part is trained on.
"""

from __future__ import annotations

import re

# "question|answer|another accepted form|...": compact, one line each.
_RAW = """\
What is the capital of France?|Paris
What is the capital of Japan?|Tokyo
What is the capital of Italy?|Rome
What is the capital of Germany?|Berlin
What is the capital of Spain?|Madrid
What is the capital of Canada?|Ottawa
What is the capital of Egypt?|Cairo
What is the capital of Russia?|Moscow
What is the capital of China?|Beijing|Peking
What is the capital of the United Kingdom?|London
What is the capital of Kenya?|Nairobi
What is the capital of Greece?|Athens
What is the capital of Portugal?|Lisbon
What is the capital of Ireland?|Dublin
What is the capital of Norway?|Oslo
What is the capital of Sweden?|Stockholm
What is the capital of Argentina?|Buenos Aires
What is the capital of Mexico?|Mexico City
What is the capital of South Korea?|Seoul
What is the capital of India?|New Delhi|Delhi
What is the capital of Thailand?|Bangkok
What is the capital of Peru?|Lima
What is the capital of Austria?|Vienna
What is the capital of Poland?|Warsaw
What is the capital of Turkey?|Ankara
What is the capital of Cuba?|Havana
What is the capital of the Netherlands?|Amsterdam
What is the capital of Belgium?|Brussels
What is the capital of Denmark?|Copenhagen
What is the capital of Finland?|Helsinki
Which planet is known as the Red Planet?|Mars
What is the largest planet in our solar system?|Jupiter
Which planet is closest to the Sun?|Mercury
What planet has the most famous rings?|Saturn
What is the closest star to Earth?|the Sun|Sun
What is the natural satellite of the Earth called?|the Moon|Moon
How many planets are in our solar system?|8|eight
What gas do plants absorb from the air for photosynthesis?|carbon dioxide|CO2
What gas do humans need to breathe to live?|oxygen
What is the chemical symbol for water?|H2O
What is the chemical symbol for gold?|Au
What is the chemical symbol for sodium?|Na
What is the chemical symbol for iron?|Fe
What is the chemical symbol for oxygen?|O
What is the freezing point of water in Celsius?|0|zero
What is the boiling point of water in Celsius?|100|one hundred
What is the hardest natural substance?|diamond|diamonds
What is the largest ocean on Earth?|Pacific
What is the largest continent?|Asia
What is the smallest continent?|Australia|Oceania
What is the longest river in the world?|Nile|Amazon
What is the largest desert in the world?|Sahara|Antarctica|Antarctic
What is the tallest mountain on Earth?|Everest|Mount Everest
On which continent is Brazil?|South America
On which continent is Egypt?|Africa
In which country are the pyramids of Giza?|Egypt
In which country is the Eiffel Tower?|France
In which city is the Colosseum?|Rome
In which country is Machu Picchu?|Peru
In which country is the Taj Mahal?|India
How many days are in a week?|7|seven
How many days are in a leap year?|366
How many months are in a year?|12|twelve
How many hours are in a day?|24|twenty-four
How many minutes are in an hour?|60|sixty
How many seconds are in a minute?|60|sixty
How many sides does a triangle have?|3|three
How many sides does a hexagon have?|6|six
How many sides does an octagon have?|8|eight
How many legs does a spider have?|8|eight
How many legs does an insect have?|6|six
How many continents are there?|7|seven
How many strings does a standard guitar have?|6|six
How many players are on a soccer team on the field?|11|eleven
How many degrees are in a right angle?|90|ninety
How many degrees are in a full circle?|360
What is 7 times 8?|56|fifty-six
What is 9 times 9?|81|eighty-one
What is 12 times 12?|144
What is 15 plus 27?|42|forty-two
What is 100 minus 37?|63|sixty-three
What is 144 divided by 12?|12|twelve
What is the square root of 81?|9|nine
What is the square root of 64?|8|eight
What is 2 to the power of 10?|1024
What is half of 50?|25|twenty-five
What is 3 squared?|9|nine
What is 6 times 7?|42|forty-two
What is 20 percent of 200?|40|forty
Who wrote Romeo and Juliet?|Shakespeare
Who wrote Pride and Prejudice?|Austen
Who wrote 1984?|Orwell
Who wrote The Odyssey?|Homer
Who painted the Mona Lisa?|Leonardo|da Vinci
Who painted The Starry Night?|Van Gogh
Who composed the Fifth Symphony that starts da-da-da-dum?|Beethoven
Who wrote Don Quixote?|Cervantes
Who wrote the Harry Potter books?|Rowling
Who developed the theory of relativity?|Einstein
Who proposed the theory of evolution by natural selection?|Darwin
Who discovered penicillin?|Fleming
Who is known for the laws of motion and gravity?|Newton
Who invented the telephone?|Bell
Who was the first person to walk on the Moon?|Armstrong
Who was the first President of the United States?|Washington
Who was the first woman to win a Nobel Prize?|Curie
What is the largest mammal?|blue whale|whale
What is the fastest land animal?|cheetah
What is the largest bird?|ostrich
What animal is known as the king of the jungle?|lion
What do bees make?|honey
What do caterpillars turn into?|butterfly|butterflies|moth
What is a baby cat called?|kitten
What is a baby dog called?|puppy|pup
What is a baby cow called?|calf
What is a group of wolves called?|pack
How many hearts does an octopus have?|3|three
What is the largest organ of the human body?|skin
How many bones are in the adult human body?|206
What organ pumps blood through the body?|heart
What part of the body does the lungs belong to, the respiratory or digestive system?|respiratory
How many teeth does an adult human usually have?|32|thirty-two
What vitamin do we get from sunlight?|vitamin D|D
What blood cells fight infection?|white
What is the main language spoken in Brazil?|Portuguese
What is the main language spoken in Mexico?|Spanish
What language is mainly spoken in Germany?|German
What is the currency of Japan?|yen
What is the currency of the United Kingdom?|pound|sterling
What is the currency of the United States?|dollar
What is the currency used in most of the European Union?|euro
In what year did World War II end?|1945
In what year did World War I begin?|1914
In what year did humans first land on the Moon?|1969
In what year did the Berlin Wall fall?|1989
In what year did Columbus first reach the Americas?|1492
In what year did the Titanic sink?|1912
What ancient civilization built the pyramids of Giza?|Egyptian|Egyptians|Egypt
What is the opposite of hot?|cold
What is the opposite of up?|down
What is the plural of mouse?|mice
What is the plural of child?|children
What is the past tense of go?|went
What color do you get when you mix blue and yellow?|green
What color do you get when you mix red and white?|pink
What color is the sky on a clear day?|blue
What are the three primary colors of paint?|red
What is frozen water called?|ice
What is the main ingredient of guacamole?|avocado|avocados
What is the main ingredient in bread?|flour|wheat
What fruit is used to make wine?|grape|grapes
What do you call a shape with four equal sides and four right angles?|square
What is the largest country by area?|Russia
What is the most populous country in the world?|India|China
What is the longest bone in the human body?|femur|thigh
What is the chemical formula of table salt?|NaCl|sodium chloride
What is the speed of light, roughly, in kilometres per second?|300,000|300000|299,792|299792
What force keeps us on the ground?|gravity
What is the center of an atom called?|nucleus
What is the closest planet to Earth?|Venus|Mercury
How many zeros are in one million?|6|six
What is the Roman numeral for 10?|X
What is the Roman numeral for 5?|V
What instrument has 88 keys?|piano
What sport is played at Wimbledon?|tennis
How many rings are on the Olympic flag?|5|five
What is the national animal of Australia often shown on its coat of arms with the emu?|kangaroo
Which metal is liquid at room temperature?|mercury
What is the tallest animal?|giraffe
"""

_NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12"}


def factual_items() -> list[tuple[str, tuple[str, ...]]]:
    """(question, accepted answers) pairs, in file order."""
    out = []
    for line in _RAW.splitlines():
        if line.strip():
            q, *answers = line.split("|")
            out.append((q.strip(), tuple(a.strip() for a in answers if a.strip())))
    return out


def _norm(text: str) -> str:
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"(?<=\d),(?=\d{3})", "", t)  # 300,000 -> 300000
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    return " " + re.sub(r"\s+", " ", t).strip() + " "


def is_correct(reply: str, answers: tuple[str, ...] | list[str]) -> bool:
    """Whether any accepted answer occurs as whole words in the reply (its first 300 chars).

    Only the opening counts, so a reply that lists every candidate at length is not rewarded.
    Number words and digits are interchangeable.
    """
    text = _norm(reply[:300])
    for ans in answers:
        forms = {_norm(ans)}
        key = ans.strip().lower()
        if key in _NUMBER_WORDS:
            forms.add(_norm(_NUMBER_WORDS[key]))
        forms.update(_norm(w) for w, d in _NUMBER_WORDS.items() if d == key)
        if any(f.strip() and f in text for f in forms):
            return True
    return False
