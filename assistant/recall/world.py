"""General-knowledge questions with short expected answers, for the recall benchmark only.

They measure whether sleeping made the model forget world knowledge
(``world_knowledge_retained``). Never used in training, and disjoint from the sleep anchors.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldQuestion:
    question: str
    answers: tuple[str, ...]  # any one of these, as whole words, is right


WORLD_QUESTIONS: tuple[WorldQuestion, ...] = (
    # Capitals of well-known countries.
    WorldQuestion("What is the capital of France?", ("Paris",)),
    WorldQuestion("What is the capital of Japan?", ("Tokyo",)),
    WorldQuestion("What is the capital of Italy?", ("Rome",)),
    WorldQuestion("What is the capital of Germany?", ("Berlin",)),
    WorldQuestion("What is the capital of Spain?", ("Madrid",)),
    WorldQuestion("What is the capital of the United Kingdom?", ("London",)),
    WorldQuestion("What is the capital of Russia?", ("Moscow",)),
    WorldQuestion("What is the capital of China?", ("Beijing", "Peking")),
    WorldQuestion("What is the capital of Egypt?", ("Cairo",)),
    WorldQuestion("What is the capital of Greece?", ("Athens",)),
    WorldQuestion("What is the capital of Canada?", ("Ottawa",)),
    WorldQuestion("What is the capital of the United States?", ("Washington", "Washington, D.C.")),
    WorldQuestion("What is the capital of Ireland?", ("Dublin",)),
    WorldQuestion("What is the capital of Portugal?", ("Lisbon",)),
    WorldQuestion("What is the capital of Austria?", ("Vienna",)),
    WorldQuestion("What is the capital of Norway?", ("Oslo",)),
    WorldQuestion("What is the capital of India?", ("New Delhi", "Delhi")),
    WorldQuestion("What is the capital of South Korea?", ("Seoul",)),
    # Planets.
    WorldQuestion("Which planet is known as the Red Planet?", ("Mars",)),
    WorldQuestion("What is the largest planet in our solar system?", ("Jupiter",)),
    WorldQuestion("Which planet is famous for its rings?", ("Saturn",)),
    WorldQuestion("Which planet is closest to the Sun?", ("Mercury",)),
    WorldQuestion("Which planet do we live on?", ("Earth",)),
    WorldQuestion("How many planets are in our solar system?", ("8", "eight")),
    WorldQuestion("What is the hottest planet in our solar system?", ("Venus",)),
    WorldQuestion("Which planet is farthest from the Sun?", ("Neptune",)),
    # Authors of very famous books.
    WorldQuestion("Who wrote Romeo and Juliet?", ("Shakespeare", "William Shakespeare")),
    WorldQuestion("Who wrote Hamlet?", ("Shakespeare", "William Shakespeare")),
    WorldQuestion("Who wrote the Harry Potter books?", ("Rowling", "J.K. Rowling")),
    WorldQuestion("Who wrote Pride and Prejudice?", ("Austen", "Jane Austen")),
    WorldQuestion("Who wrote Don Quixote?", ("Cervantes", "Miguel de Cervantes")),
    WorldQuestion("Who wrote The Adventures of Tom Sawyer?", ("Twain", "Mark Twain")),
    WorldQuestion("Who wrote A Christmas Carol?", ("Dickens", "Charles Dickens")),
    WorldQuestion("Who wrote War and Peace?", ("Tolstoy", "Leo Tolstoy")),
    WorldQuestion("Who wrote the novel 1984?", ("Orwell", "George Orwell")),
    WorldQuestion("Who wrote The Hobbit?", ("Tolkien", "J.R.R. Tolkien")),
    # Chemical symbols.
    WorldQuestion("What is the chemical symbol for gold?", ("Au",)),
    WorldQuestion("What is the chemical symbol for silver?", ("Ag",)),
    WorldQuestion("What is the chemical symbol for iron?", ("Fe",)),
    WorldQuestion("What is the chemical symbol for sodium?", ("Na",)),
    WorldQuestion("What is the chemical symbol for helium?", ("He",)),
    WorldQuestion("What is the chemical symbol for oxygen?", ("O",)),
    WorldQuestion("What is the chemical symbol for copper?", ("Cu",)),
    WorldQuestion("What is the chemical formula for water?", ("H2O",)),
    # Largest, tallest, longest.
    WorldQuestion("What is the largest ocean on Earth?", ("Pacific", "Pacific Ocean")),
    WorldQuestion("What is the tallest mountain in the world?", ("Everest", "Mount Everest")),
    WorldQuestion("What is the longest river in the world?", ("Nile", "Amazon")),
    WorldQuestion("What is the largest animal on Earth?", ("blue whale", "whale")),
    WorldQuestion("What is the largest hot desert in the world?", ("Sahara",)),
    WorldQuestion("What is the largest country by area?", ("Russia",)),
    WorldQuestion("What is the largest continent?", ("Asia",)),
    WorldQuestion("What is the tallest animal?", ("giraffe",)),
    WorldQuestion("What is the largest bird in the world?", ("ostrich",)),
    WorldQuestion("What is the largest organ of the human body?", ("skin",)),
    # Arithmetic.
    WorldQuestion("What is 2 plus 2?", ("4", "four")),
    WorldQuestion("What is 3 plus 5?", ("8", "eight")),
    WorldQuestion("What is 10 minus 3?", ("7", "seven")),
    WorldQuestion("What is 5 times 2?", ("10", "ten")),
    WorldQuestion("What is 3 times 3?", ("9", "nine")),
    WorldQuestion("What is 10 divided by 2?", ("5", "five")),
)
