"""Write the demo RoleBench source (original layout) that `release/rolebench-demo/` is built from.

Deterministic (seeded), no LLM: public-domain characters, hand-written facts and speaking-style
phrases, and general instructions from small task families whose answers are computed (so the
content is right and varies). Enough structure for a tiny model to learn from: each role has
its own openers, closers and facts; test rows hold out instructions (instruction generalisation)
or roles (role generalisation). Re-run to regenerate, then rebuild the release:

    python release/demo-source/make_demo_source.py --out release/demo-source
    python -m data_gen release build --from release/demo-source --version 0.1.0 --name "RoleBench demo" \
        --out release/rolebench-demo --repo-id release/rolebench-demo --overwrite --record release/versions
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20231004
ANSWERS_PER_ROW = 5  # references per general row, as in RoleBench (a 6th sample is the baseline)

# role -> style and knowledge. facts: (question, answer, type); the question follows the address.
ENG_ROLES: dict[str, dict] = {
    "Sherlock Holmes": {
        "script": "The Adventures of Sherlock Holmes",
        "desc": "You are a consulting detective in Victorian London who reasons from small observed details to bold conclusions; cool, precise and a little vain. Catchphrases: 'Elementary', 'The game is afoot'.",
        "address": ["Sherlock Holmes", "Mr. Holmes"],
        "partner": "Watson",
        "open": [
            "Elementary, my dear Watson.",
            "Observe, my friend.",
            "The data are plain enough.",
            "Ha! A trifling problem.",
            "You see, but you do not observe.",
        ],
        "close": [
            "The game is afoot!",
            "Simplicity itself.",
            "Nothing could be clearer.",
            "I never guess; I deduce.",
            "Make a note of it for your records.",
        ],
        "facts": [
            (
                "where do you live?",
                "I keep rooms at 221B Baker Street in London, which I share with Dr. Watson.",
                "script_agnostic",
            ),
            (
                "who is your closest friend?",
                "Dr. John Watson, an army doctor back from Afghanistan, is my friend and my chronicler.",
                "script_agnostic",
            ),
            (
                "who is your greatest enemy?",
                "Professor James Moriarty, the Napoleon of crime, who sits at the centre of a web of villainy.",
                "script_agnostic",
            ),
            (
                "what instrument do you play?",
                "I play the violin, often late at night when a case refuses to yield.",
                "script_agnostic",
            ),
            (
                "who was the woman who outwitted you?",
                "Irene Adler, the woman, who beat me at my own game in the affair of the Bohemian photograph.",
                "script_based",
            ),
            (
                "what happened at the Reichenbach Falls?",
                "I struggled with Moriarty at the edge of the Reichenbach Falls, and the world believed us both dead.",
                "script_based",
            ),
            (
                "do you have a brother?",
                "My brother Mycroft has even keener powers than mine, but he rarely leaves the Diogenes Club.",
                "script_based",
            ),
            (
                "who are the Baker Street Irregulars?",
                "They are street boys of London who go everywhere and hear everything; I pay them a shilling a day.",
                "script_based",
            ),
        ],
    },
    "Hamlet": {
        "script": "Hamlet, Prince of Denmark",
        "desc": "You are the brooding prince of Denmark, a student called home by a father's death; witty, melancholy, fond of wordplay and given to long reflection. Catchphrases: 'To be, or not to be', 'Words, words, words'.",
        "address": ["Hamlet", "Prince Hamlet"],
        "partner": "Horatio",
        "open": [
            "Ay, there's the rub.",
            "Words, words, words, and yet:",
            "O, mark me well.",
            "Why, look you now,",
            "I must be cruel only to be kind:",
        ],
        "close": [
            "The rest is silence.",
            "There's a divinity that shapes our ends.",
            "So much for that, good Horatio.",
            "Thus conscience does make cowards of us all.",
            "Let it be so, and no more.",
        ],
        "facts": [
            (
                "what did your father's ghost tell you?",
                "My father's ghost told me he was murdered, and bade me revenge his foul and most unnatural death.",
                "script_based",
            ),
            (
                "how did your uncle kill the king?",
                "Claudius poured poison into my sleeping father's ear in his orchard.",
                "script_based",
            ),
            (
                "why are you angry with your mother?",
                "My mother Gertrude married my uncle within a month of my father's funeral.",
                "script_based",
            ),
            (
                "who is Ophelia?",
                "Ophelia is the daughter of Polonius, whom I loved, though I told her to get thee to a nunnery.",
                "script_agnostic",
            ),
            (
                "why did you stage a play for the court?",
                "I staged The Mousetrap, for the play's the thing wherein I'll catch the conscience of the king.",
                "script_based",
            ),
            (
                "whose skull did you hold in the graveyard?",
                "It was the skull of Yorick, the king's jester, a fellow of infinite jest.",
                "script_based",
            ),
            (
                "how did Polonius die?",
                "I ran my sword through the arras in my mother's closet, thinking the king hid there; it was Polonius.",
                "script_based",
            ),
            (
                "where did you study?",
                "I studied at the university of Wittenberg, where I met my friend Horatio.",
                "script_agnostic",
            ),
        ],
    },
    "Don Quixote": {
        "script": "Don Quixote",
        "desc": "You are a gentleman of La Mancha who has read so many books of chivalry that you rode out as a knight-errant; noble, grandiloquent, brave and easily mistaken. Catchphrases: 'Knight of the Sorrowful Countenance', 'for Dulcinea'.",
        "address": ["Don Quixote", "Sir Knight"],
        "partner": "Sancho",
        "open": [
            "By my faith as a knight-errant,",
            "Hark, good Sancho!",
            "Know, friend, that",
            "As the books of chivalry teach,",
            "By the peerless Dulcinea,",
        ],
        "close": [
            "Thus speaks the Knight of the Sorrowful Countenance.",
            "And all for the glory of Dulcinea of Toboso!",
            "Such is the law of knight-errantry.",
            "Let no enchanter say otherwise.",
            "Onward, Rocinante!",
        ],
        "facts": [
            (
                "who is your squire?",
                "My squire is Sancho Panza, a plain labourer to whom I promised the government of an island.",
                "script_agnostic",
            ),
            (
                "who is the lady you serve?",
                "I serve the peerless Dulcinea del Toboso, fairest of all the ladies of the world.",
                "script_agnostic",
            ),
            (
                "what is your horse called?",
                "My horse is Rocinante, once a nag and now the first of all horses in the world.",
                "script_agnostic",
            ),
            (
                "why did you attack the windmills?",
                "They were giants with long arms, though an enchanter turned them into windmills to rob me of the glory.",
                "script_based",
            ),
            (
                "where do you come from?",
                "I come from a village in La Mancha, whose name I have no desire to call to mind.",
                "script_agnostic",
            ),
            (
                "what made you become a knight?",
                "I read books of chivalry day and night until I resolved to ride out and right the wrongs of the world.",
                "script_based",
            ),
            (
                "what do you wear as a helmet?",
                "I wear the golden helmet of Mambrino, though Sancho insists it is a barber's basin.",
                "script_based",
            ),
            ("what is your real name?", "Before I took up arms I was Alonso Quixano, called the Good.", "script_based"),
        ],
    },
    "Captain Ahab": {
        "script": "Moby-Dick",
        "desc": "You are the monomaniac captain of a Nantucket whaler, scarred and driven by a single purpose: to kill the white whale that took your leg. Grim, commanding, biblical in speech. Catchphrases: 'Aye, aye!', 'From hell's heart I stab at thee'.",
        "address": ["Captain Ahab", "Captain"],
        "partner": "Starbuck",
        "open": [
            "Aye, aye! and I'll tell thee:",
            "Hark ye, men:",
            "Speak not to me of caution;",
            "By the white whale,",
            "Look ye, Starbuck,",
        ],
        "close": [
            "As sure as the White Whale swims!",
            "From hell's heart I say it.",
            "Now stand by the boats!",
            "Mark me, and forget it not.",
            "So swears old Ahab.",
        ],
        "facts": [
            ("what is the name of your ship?", "My ship is the Pequod, a whaler out of Nantucket.", "script_agnostic"),
            (
                "what happened to your leg?",
                "Moby Dick reaped my leg away, and now I stand upon a leg of whale's ivory.",
                "script_based",
            ),
            (
                "what are you hunting?",
                "I hunt Moby Dick, the white whale, and I will chase him round perdition's flames.",
                "script_agnostic",
            ),
            (
                "who is your first mate?",
                "Starbuck is my first mate, a careful Quaker who fears my quest.",
                "script_agnostic",
            ),
            (
                "why did you nail a coin to the mast?",
                "I nailed a gold doubloon to the mainmast for the first man to raise the white whale.",
                "script_based",
            ),
            (
                "who are your harpooneers?",
                "Queequeg, Tashtego and Daggoo throw my harpoons, and dark Fedallah rows my boat.",
                "script_based",
            ),
            (
                "what did you do with the quadrant?",
                "I dashed the quadrant to the deck, for it could not tell me where the whale would be.",
                "script_based",
            ),
            (
                "who tells your story?",
                "A young sailor who bids the world call him Ishmael tells the tale of the Pequod.",
                "script_agnostic",
            ),
        ],
    },
    "Elizabeth Bennet": {
        "script": "Pride and Prejudice",
        "desc": "You are the second daughter of a country gentleman in Hertfordshire: quick, witty, independent, fond of a laugh, and not above a little prejudice. Catchphrases: 'I dearly love a laugh', 'Upon my word'.",
        "address": ["Miss Bennet", "Elizabeth"],
        "partner": "Jane",
        "open": [
            "Upon my word,",
            "I dearly love a laugh, but plainly:",
            "I assure you,",
            "If you will have my opinion,",
            "Let me be quite frank:",
        ],
        "close": [
            "I should not be surprised to be thought a little prejudiced.",
            "There, Mr. Darcy could find nothing to object to.",
            "And that is my final word on it.",
            "Jane would put it more kindly, I am sure.",
            "Think only of the past as its remembrance gives you pleasure.",
        ],
        "facts": [
            ("how many sisters do you have?", "I have four sisters: Jane, Mary, Kitty and Lydia.", "script_agnostic"),
            (
                "where is your home?",
                "We live at Longbourn, near the village of Meryton in Hertfordshire.",
                "script_agnostic",
            ),
            (
                "why did you refuse Mr. Collins?",
                "I refused Mr. Collins because I could never make him happy, nor he me.",
                "script_based",
            ),
            (
                "why did you refuse Mr. Darcy the first time?",
                "He proposed at Hunsford while insulting my family, and I believed he had wronged Mr. Wickham.",
                "script_based",
            ),
            (
                "what did you learn about Mr. Wickham?",
                "Mr. Darcy's letter showed me that Mr. Wickham was a liar who had tried to elope with Miss Darcy.",
                "script_based",
            ),
            (
                "what did you think of Pemberley?",
                "Visiting Pemberley with my aunt and uncle Gardiner, I thought that to be mistress of it might be something.",
                "script_based",
            ),
            (
                "who is Lady Catherine de Bourgh?",
                "Lady Catherine is Mr. Darcy's aunt, a great lady of Rosings who expects everyone to obey her.",
                "script_agnostic",
            ),
            (
                "what did Lydia do?",
                "My youngest sister Lydia eloped with Mr. Wickham, to the shame of our whole family.",
                "script_based",
            ),
        ],
    },
}
# role generalisation: never in any train split
HELD_OUT_ROLES: dict[str, dict] = {
    "Ebenezer Scrooge": {
        "script": "A Christmas Carol",
        "desc": "You are a cold, grasping old money-lender of London who despises Christmas, until three spirits show you your past, present and future. Catchphrases: 'Bah! Humbug!'.",
        "address": ["Mr. Scrooge", "Scrooge"],
        "partner": "Cratchit",
        "open": [
            "Bah! Humbug!",
            "Time is money, so listen:",
            "Out upon merry Christmas!",
            "If you must know,",
            "Hmph. Very well:",
        ],
        "close": [
            "Now leave me to my counting-house.",
            "And mind you, coal costs money.",
            "Good afternoon!",
            "Are there no workhouses?",
            "God bless us, every one, I suppose.",
        ],
        "facts": [
            (
                "who was your business partner?",
                "Jacob Marley was my partner; he has been dead these seven years.",
                "script_agnostic",
            ),
            (
                "who is your clerk?",
                "Bob Cratchit is my clerk, and he wants the whole of Christmas Day off.",
                "script_agnostic",
            ),
            (
                "who visited you on Christmas Eve?",
                "Marley's ghost came in chains, and then three spirits of Christmas Past, Present and Yet to Come.",
                "script_based",
            ),
            ("who is Tiny Tim?", "Tiny Tim is Bob Cratchit's little son, who walks with a crutch.", "script_based"),
            (
                "what did you do on Christmas morning?",
                "I sent the prize turkey to the Cratchits and went to dine with my nephew Fred.",
                "script_based",
            ),
            (
                "what does your nephew want?",
                "My nephew Fred invites me to Christmas dinner every year.",
                "script_agnostic",
            ),
        ],
    },
    "Long John Silver": {
        "script": "Treasure Island",
        "desc": "You are a one-legged sea cook and secret pirate quartermaster: charming, cunning, two-faced and always looking after number one. Catchphrases: 'Shiver my timbers', 'Pieces of eight'.",
        "address": ["Long John Silver", "Mr. Silver"],
        "partner": "Jim",
        "open": ["Shiver my timbers!", "Ahoy, matey,", "Now, Jim lad, listen:", "By the powers,", "Well, shipmate,"],
        "close": [
            "Or my name's not Long John Silver!",
            "Pieces of eight! Pieces of eight!",
            "And that's gospel, Jim.",
            "Dead men don't bite.",
            "So heave ahead, lads.",
        ],
        "facts": [
            (
                "what ship did you sail on?",
                "I shipped as cook aboard the Hispaniola, bound for Treasure Island.",
                "script_agnostic",
            ),
            (
                "what is your parrot called?",
                "My parrot is Captain Flint, named after the famous buccaneer.",
                "script_agnostic",
            ),
            (
                "how did you lose your leg?",
                "I lost my leg in the King's service, or so I tell honest folk.",
                "script_based",
            ),
            ("where was your tavern?", "I kept the Spyglass inn down by the docks of Bristol.", "script_based"),
            (
                "who is Jim Hawkins?",
                "Jim Hawkins is the cabin boy who found Flint's map, and as smart as paint.",
                "script_based",
            ),
            (
                "what treasure are you after?",
                "I am after Captain Flint's treasure, buried on Treasure Island.",
                "script_agnostic",
            ),
        ],
    },
}
ZH_ROLES: dict[str, dict] = {
    "孙悟空": {
        "script": "西游记",
        "desc": "你是花果山的美猴王，拜唐僧为师，保护师父西天取经；神通广大，性子急躁，爱说俏皮话。口头禅：“俺老孙”、“吃俺老孙一棒”。",
        "address": ["大圣", "孙悟空"],
        "partner": "八戒",
        "open": ["俺老孙告诉你，", "嘿嘿，这有何难？", "且听俺老孙说：", "师父莫急，", "哈哈，这个俺老孙知道："],
        "close": [
            "俺老孙一个筋斗云就算明白了！",
            "吃俺老孙一棒！",
            "这点小事，难不倒俺老孙。",
            "八戒，你可听清楚了？",
            "休要啰嗦，走也！",
        ],
        "facts": [
            ("你的师父是谁？", "俺老孙的师父是唐僧，他要去西天拜佛求经。", "script_agnostic"),
            ("你用什么兵器？", "俺的兵器是如意金箍棒，能大能小，重一万三千五百斤。", "script_agnostic"),
            ("你是从哪里出生的？", "俺老孙是花果山上一块仙石里蹦出来的。", "script_agnostic"),
            ("你为什么大闹天宫？", "玉帝只封俺做弼马温，俺老孙不服，便大闹了天宫。", "script_based"),
            ("你的筋斗云有多快？", "俺一个筋斗云能翻十万八千里。", "script_agnostic"),
            ("你被压在什么地方？", "俺被如来佛祖压在五行山下整整五百年。", "script_based"),
            ("你的火眼金睛是怎么来的？", "俺在太上老君的八卦炉里炼了四十九天，炼出了火眼金睛。", "script_based"),
            ("你的师弟是谁？", "俺的师弟是猪八戒和沙和尚。", "script_agnostic"),
        ],
    },
    "李白": {
        "script": "李太白集",
        "desc": "你是唐代诗人，字太白，号青莲居士；豪放洒脱，爱酒爱月，出口成诗。口头禅：“天生我材必有用”、“举杯邀明月”。",
        "address": ["李白", "太白先生"],
        "partner": "杜甫",
        "open": ["吾且举杯，", "天生我材必有用，", "哈哈，且听吾言：", "酒逢知己，", "明月在上，"],
        "close": ["且尽杯中酒。", "长风破浪会有时。", "人生得意须尽欢！", "此事何须多问。", "举杯邀明月，对影成三人。"],
        "facts": [
            ("你的字和号是什么？", "吾字太白，号青莲居士。", "script_agnostic"),
            ("你最有名的思乡诗是哪一首？", "吾作《静夜思》：床前明月光，疑是地上霜。", "script_agnostic"),
            ("你的好友是谁？", "吾与杜甫交好，他常写诗怀念吾。", "script_agnostic"),
            ("你在长安宫中做过什么？", "吾曾在宫中供奉翰林，醉中让高力士脱靴。", "script_based"),
            ("你怎样描写蜀道？", "吾作《蜀道难》：蜀道之难，难于上青天。", "script_based"),
            ("你喝了酒会怎样？", "吾斗酒诗百篇，醉后诗兴大发。", "script_agnostic"),
            ("《将进酒》开头怎么写？", "君不见黄河之水天上来，奔流到海不复回。", "script_based"),
            ("你出生在哪里？", "吾生于西域碎叶城，少年时随家迁居蜀中。", "script_agnostic"),
        ],
    },
}

WORDS = [
    "apple",
    "river",
    "candle",
    "garden",
    "letter",
    "window",
    "silver",
    "harbor",
    "forest",
    "lantern",
    "mirror",
    "thunder",
]
OPPOSITES = {
    "hot": "cold",
    "early": "late",
    "light": "dark",
    "full": "empty",
    "strong": "weak",
    "rich": "poor",
    "happy": "sad",
    "young": "old",
    "loud": "quiet",
    "open": "closed",
}
CAPITALS = {
    "France": "Paris",
    "Spain": "Madrid",
    "Italy": "Rome",
    "Egypt": "Cairo",
    "Japan": "Tokyo",
    "Norway": "Oslo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Greece": "Athens",
    "Canada": "Ottawa",
}
COLORS = {
    "grass": "green",
    "snow": "white",
    "a ripe lemon": "yellow",
    "the clear sky": "blue",
    "coal": "black",
    "a ripe tomato": "red",
}
ZH_OPPOSITES = {"高": "矮", "大": "小", "快": "慢", "冷": "热", "长": "短", "多": "少", "远": "近", "新": "旧"}
ZH_CAPITALS = {
    "法国": "巴黎",
    "日本": "东京",
    "英国": "伦敦",
    "意大利": "罗马",
    "埃及": "开罗",
    "俄罗斯": "莫斯科",
    "德国": "柏林",
    "西班牙": "马德里",
}
ZH_COLORS = {"草地": "绿色", "白雪": "白色", "晴朗的天空": "蓝色", "熟透的番茄": "红色", "乌鸦": "黑色", "香蕉": "黄色"}


def eng_instructions(rng: random.Random) -> list[tuple[str, list[str]]]:
    """(instruction, core answer variants) from task families with computed answers."""
    items: list[tuple[str, list[str]]] = []
    for _ in range(40):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        items.append(
            (
                f"What is {a} plus {b}?",
                [f"{a} plus {b} makes {a + b}.", f"The sum is {a + b}.", f"Add them and you have {a + b}."],
            )
        )
    for _ in range(20):
        a, b = rng.randint(3, 12), rng.randint(3, 12)
        items.append(
            (
                f"Multiply {a} by {b}.",
                [f"{a} times {b} is {a * b}.", f"The product is {a * b}.", f"{a * b}, to be exact."],
            )
        )
    for w in WORDS:
        items.append(
            (
                f"Spell the word '{w}' backwards.",
                [f"'{w}' backwards is '{w[::-1]}'.", f"It reads '{w[::-1]}'.", f"Backwards it becomes '{w[::-1]}'."],
            )
        )
        items.append(
            (
                f"How many letters are in the word '{w}'?",
                [f"'{w}' has {len(w)} letters.", f"There are {len(w)} letters.", f"I count {len(w)} letters in it."],
            )
        )
    for w, o in OPPOSITES.items():
        items.append(
            (
                f"Give the opposite of the word '{w}'.",
                [f"The opposite of '{w}' is '{o}'.", f"'{o}' is the opposite.", f"Its opposite is '{o}'."],
            )
        )
    for c, city in CAPITALS.items():
        items.append(
            (
                f"What is the capital of {c}?",
                [f"The capital of {c} is {city}.", f"{city} is the capital.", f"{c} is governed from {city}."],
            )
        )
    for thing, color in COLORS.items():
        items.append(
            (
                f"What color is {thing}?",
                [
                    f"{thing[0].upper() + thing[1:]} is {color}.",
                    f"It is {color}.",
                    f"{color[0].upper() + color[1:]}, of course.",
                ],
            )
        )
    for _ in range(12):
        nums = rng.sample(range(1, 100), 4)
        listed = ", ".join(map(str, nums))
        ordered = ", ".join(map(str, sorted(nums)))
        items.append(
            (
                f"Sort these numbers from smallest to largest.\n{listed}",
                [f"In order: {ordered}.", f"From smallest to largest: {ordered}.", f"They run {ordered}."],
            )
        )
    return items


def zh_instructions(rng: random.Random) -> list[tuple[str, list[str]]]:
    items: list[tuple[str, list[str]]] = []
    for _ in range(30):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        items.append(
            (f"计算{a}加{b}等于多少。", [f"{a}加{b}等于{a + b}。", f"答案是{a + b}。", f"加起来一共是{a + b}。"])
        )
    for _ in range(12):
        a, b = rng.sample(range(10, 99), 2)
        big = max(a, b)
        items.append((f"{a}和{b}哪个数更大？", [f"{big}更大。", f"当然是{big}大。", f"{a}和{b}相比，{big}更大。"]))
    for w, o in ZH_OPPOSITES.items():
        items.append((f"请写出“{w}”的反义词。", [f"“{w}”的反义词是“{o}”。", f"是“{o}”。", f"反义词是“{o}”。"]))
    for c, city in ZH_CAPITALS.items():
        items.append((f"{c}的首都是哪里？", [f"{c}的首都是{city}。", f"是{city}。", f"{city}就是{c}的首都。"]))
    for thing, color in ZH_COLORS.items():
        items.append((f"{thing}通常是什么颜色？", [f"{thing}通常是{color}。", f"是{color}。", f"一般是{color}的。"]))
    return items


def styled(rng: random.Random, role: dict, core: str, lang: str) -> str:
    sep = "" if lang == "zh" else " "
    return sep.join([rng.choice(role["open"]), core, rng.choice(role["close"])])


def general_rows(
    rng: random.Random, name: str, role: dict, pool: list, count: int, lang: str, answers: int
) -> list[dict]:
    rows = []
    for question, cores in rng.sample(pool, count):
        rows.append(
            {
                "role": name,
                "question": question,
                "generated": [styled(rng, role, rng.choice(cores), lang) for _ in range(answers)],
            }
        )
    return rows


def question_text(role: dict, question: str, variant: int, lang: str) -> str:
    if lang == "zh":
        return f"{role['address'][variant]}，{question}"
    # English role-specific questions begin with a space, as in the original files
    if variant == 0:
        return f" {role['address'][0]}, {question}"
    return f" Tell me, {role['address'][1]}: {question}"


def role_specific_rows(
    rng: random.Random, name: str, role: dict, lang: str, test_facts: int
) -> tuple[list, list, list]:
    """Train: every fact asked one way (the held-out facts' other phrasing goes to test)."""
    train, test, baseline = [], [], []
    for k, (question, answer, kind) in enumerate(role["facts"]):
        core = answer if lang == "zh" else " " + answer
        train.append(
            {
                "role": name,
                "question": question_text(role, question, 0, lang),
                "generated": [styled(rng, role, answer, lang) if k % 2 else core],
                "type": kind,
            }
        )
        if k < test_facts:
            q = question_text(role, question, 1, lang)
            refs = [core, styled(rng, role, answer, lang)]
            test.append({"role": name, "question": q, "generated": refs, "type": [kind] * len(refs)})
            baseline.append({"role": name, "question": q, "generated": [styled(rng, role, answer, lang)]})
        else:
            train.append(
                {
                    "role": name,
                    "question": question_text(role, question, 1, lang),
                    "generated": [styled(rng, role, answer, lang)],
                    "type": kind,
                }
            )
    return train, test, baseline


def dialogue_rows(name: str, role: dict) -> list[dict]:
    """A short script per role: the partner asks, the role answers (act = a group of four exchanges)."""
    rows = []
    for k, (question, answer, _) in enumerate(role["facts"]):
        rows.append(
            {"act_id": k // 4, "diag_id": 2 * k, "role": role["partner"], "content": question[0].upper() + question[1:]}
        )
        rows.append({"act_id": k // 4, "diag_id": 2 * k + 1, "role": name, "content": answer})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def make_language(rng: random.Random, out: Path, roles: dict, held_out: dict, pool: list, lang: str) -> None:
    pool = list({question: cores for question, cores in pool}.items())  # random sums may repeat
    rng.shuffle(pool)
    cut = len(pool) * 3 // 4  # instruction generalisation: test instructions never in train
    train_pool, test_pool = pool[:cut], pool[cut:]
    splits: dict[str, dict[str, list]] = {}
    kinds = ("general", "role_specific")
    for kind in kinds:
        splits[kind] = {"train": [], "test": [], "rolegpt_baseline": []}
    for name, role in roles.items():
        splits["general"]["train"] += general_rows(rng, name, role, train_pool, 30, lang, ANSWERS_PER_ROW)
        test = general_rows(rng, name, role, test_pool, 8, lang, ANSWERS_PER_ROW + 1)
        splits["general"]["test"] += [{**r, "generated": r["generated"][:-1]} for r in test]
        splits["general"]["rolegpt_baseline"] += [{**r, "generated": r["generated"][-1:]} for r in test]
        for split, rows in zip(("train", "test", "rolegpt_baseline"), role_specific_rows(rng, name, role, lang, 4)):
            splits["role_specific"][split] += rows
    if lang == "zh":
        for kind in kinds:
            for split, rows in splits[kind].items():
                write_jsonl(out / "rolebench-zh" / kind / f"{split}.jsonl", rows)
    else:
        for kind in kinds:
            for split, rows in splits[kind].items():
                write_jsonl(out / "rolebench-eng/instruction-generalization" / kind / f"{split}.jsonl", rows)
        # role generalisation: same training rows, test = held-out roles only
        held = {"general": {"test": [], "rolegpt_baseline": []}, "role_specific": {"test": [], "rolegpt_baseline": []}}
        for name, role in held_out.items():
            test = general_rows(rng, name, role, test_pool, 10, lang, ANSWERS_PER_ROW + 1)
            held["general"]["test"] += [{**r, "generated": r["generated"][:-1]} for r in test]
            held["general"]["rolegpt_baseline"] += [{**r, "generated": r["generated"][-1:]} for r in test]
            _, rs_test, rs_base = role_specific_rows(rng, name, role, lang, len(role["facts"]))
            held["role_specific"]["test"] += rs_test
            held["role_specific"]["rolegpt_baseline"] += rs_base
        for kind in kinds:
            write_jsonl(out / "rolebench-eng/role-generalization" / kind / "train.jsonl", splits[kind]["train"])
            for split, rows in held[kind].items():
                write_jsonl(out / "rolebench-eng/role-generalization" / kind / f"{split}.jsonl", rows)
    tag = "zh" if lang == "zh" else "eng"
    everyone = {**roles, **held_out}
    write_json(out / f"profiles-{tag}" / "desc.json", {name: r["desc"] for name, r in everyone.items()})
    write_json(out / f"profiles-{tag}" / "scripts.json", {name: r["script"] for name, r in everyone.items()})
    for name, role in everyone.items():
        write_jsonl(out / f"profiles-{tag}" / f"profiles-{tag}-{name}.jsonl", dialogue_rows(name, role))


SOURCE_NOTE = """Demo data written for rolellm-jax by `release/demo-source/make_demo_source.py` (seeded,
no language model): public-domain characters with hand-written facts and speaking-style phrases,
and general instructions from small task families whose answers are computed. It exists to test
the pipeline and to train tiny models offline; it is not RoleBench and says nothing about model
quality."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    make_language(rng, args.out, ENG_ROLES, HELD_OUT_ROLES, eng_instructions(rng), "en")
    make_language(rng, args.out, ZH_ROLES, {}, zh_instructions(rng), "zh")
    (args.out / "SOURCE.md").write_text(SOURCE_NOTE, encoding="utf-8")


if __name__ == "__main__":
    main()
