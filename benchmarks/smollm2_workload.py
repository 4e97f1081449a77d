"""What the SmolLM2 benchmarks share: the model's shape and the chat questions they ask it.

SMOLLM2_135M is SmolLM2-135M(-Instruct)'s config.json architecture, the real shape of issue 17's
benchmarks (random weights where a script does not load the real ones).
"""

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)
CHAT_QUESTIONS = [
    "Who are you and what do you do every day?",
    "Tell me about the city where you grew up.",
    "What would you say to a friend who lost their job?",
    "Describe your favourite meal and why you love it.",
    "What is the bravest thing you have ever done?",
    "Give me your advice on learning a new language.",
    "How do you spend a rainy Sunday afternoon?",
    "What do you think about when you cannot sleep?",
]
