"""Hand-written chat-style pairs, none taken from QQP: (cached question, new question).

HARD_NEGATIVES must never be served from each other's cache entry: the first stage (cosine)
ranks them close, but the answer differs (on/off, enable/disable, numbers, places, people,
a different question target, negation). PARAPHRASES ask the same thing in other words.
"""

from __future__ import annotations

HARD_NEGATIVES: tuple[tuple[str, str], ...] = (
    ("Turn the alarm on", "Turn the alarm off"),
    ("How do I enable dark mode?", "How do I disable dark mode?"),
    ("Set a timer for 5 minutes", "Set a timer for 10 minutes"),
    ("What was the GDP of France in 2019?", "What was the GDP of France in 2020?"),
    ("Is coffee good for your health?", "Is coffee not good for your health?"),
    ("How do I install Docker on Ubuntu?", "How do I uninstall Docker on Ubuntu?"),
    ("What is the weather in Paris today?", "What is the weather in London today?"),
    ("How do I reset my password?", "Why do I need to reset my password?"),
    ("How does a refrigerator work?", "Why does a refrigerator make noise?"),
    ("Convert 100 dollars to euros", "Convert 250 dollars to euros"),
    ("When did World War 2 end?", "Where did World War 2 end?"),
    ("Who wrote Hamlet?", "Who wrote Macbeth?"),
    ("Increase the volume", "Decrease the volume"),
    ("How do I upload a file to Google Drive?", "How do I download a file from Google Drive?"),
    ("What is the capital of Australia?", "What is the capital of Austria?"),
    ("Lock the front door", "Unlock the front door"),
    ("What are the advantages of electric cars?", "What are the disadvantages of electric cars?"),
    ("How many calories are in a banana?", "How many calories are in an apple?"),
    ("Book a table for two people", "Book a table for four people"),
    ("Can dogs eat chocolate?", "Can cats eat chocolate?"),
    ("How do I encrypt a file on Linux?", "How do I decrypt a file on Linux?"),
    ("What time does the store open?", "What time does the store close?"),
)

PARAPHRASES: tuple[tuple[str, str], ...] = (
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital of France?"),
    ("How can I learn Python quickly?", "What is the fastest way to learn Python?"),
    ("How do I lose weight fast?", "How can I lose weight quickly?"),
    ("What is the best way to learn guitar?", "How can I learn to play the guitar?"),
    ("How do I make a good resume?", "How can I write a good resume?"),
    ("What are some good books to read?", "What are some of the best books to read?"),
    ("How do I improve my English speaking?", "How can I improve my spoken English?"),
    ("Turn on the living room lights", "Please turn on the lights in the living room"),
    ("What is machine learning?", "What is machine learning exactly?"),
    ("How do I get rid of acne?", "How can I get rid of my acne?"),
    ("What is the meaning of life?", "What's the meaning of life?"),
    ("How can I become a better programmer?", "How do I become a better programmer?"),
    ("Why is the sky blue?", "Why is the sky blue in color?"),
    ("How do I start a small business?", "How can I start my own small business?"),
    ("What should I do to sleep better?", "How can I sleep better?"),
    ("How do I cook rice?", "How should I cook rice?"),
    ("What is the best programming language to learn first?",
     "Which programming language should I learn first?"),
)
