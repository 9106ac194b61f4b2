"""Deterministic tokenizer test corpus (imported by make_tokenizer_goldens.py).

pieces() returns a list of (kind, bytes): prose from the calibration texts, code, numbers,
whitespace runs, non-Latin scripts, emoji, combining marks, special-token strings, random
Unicode and malformed UTF-8. Everything is fixed by the seed so the goldens are reproducible.
"""
import glob
import os
import random

SHARED = os.environ.get("AQUAKV_SHARED_DIR", "/work/shared")

SCRIPTS = [
    "汉字是世界上最古老的文字之一，至今已有三千多年的历史。今天天气很好，我们去公园散步吧。",
    "東京は日本の首都です。ひらがなとカタカナと漢字を使います。すみません、駅はどこですか？",
    "한국어는 한글로 씁니다. 안녕하세요, 만나서 반갑습니다! 오늘은 2024년 3월 15일입니다.",
    "Москва — столица России. Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Привет, мир! Это тест токенизатора: числа 1234, ДАТА 01.02.2003 и СЛОВА в ВЕРХНЕМ регистре.",
    "اللغة العربية من أكثر اللغات انتشاراً في العالم. مرحبا بالعالم! الرقم ١٢٣٤٥ والعدد 678.",
    "हिन्दी भारत की राजभाषा है। नमस्ते दुनिया! संख्या १२३४ और क्षत्रिय, द्वार, श्रृंखला।",
    "Η ελληνική γλώσσα έχει ιστορία τριών χιλιάδων ετών. Καλημέρα κόσμε!",
    "עברית נכתבת מימין לשמאל. שלום עולם! מספר 42.",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ สวัสดีครับ ยินดีต้อนรับ",
    "Tiếng Việt có nhiều dấu: Tiếng Việt, người, được, những, chữ Quốc ngữ.",
    "Ελληνικά, русский, 中文, 日本語, 한국어, العربية, हिन्दी mixed in one English sentence.",
    "Türkçe: İstanbul, ılık, şğüöç. Polski: zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň.",
    "ქართული ენა, Հայերեն լեզու, አማርኛ ቋንቋ, ᏣᎳᎩ, ᠮᠣᠩᠭᠣᠯ, ꦧꦱꦗꦮ",
]

EMOJI = [
    "I love pizza 🍕🍕🍕 and coffee ☕!", "👍🏽 thumbs up with skin tone, 👋🏿 wave",
    "family: 👨‍👩‍👧‍👦 and couple 👩‍❤️‍👨 (ZWJ sequences)", "flags 🇺🇸🇩🇪🇯🇵🇫🇷 and 🏳️‍🌈",
    "❤️ vs ❤ (variation selector), keycaps 1️⃣2️⃣#️⃣", "new ones: 🫨🫸🫷🪼🪿 🥹🫠",
    "😀😃😄😁😆😅😂🤣🥲☺️😊😇🙂🙃😉😌😍🥰😘", "math 𝕳𝖊𝖑𝖑𝖔 𝒲ℴ𝓇𝓁𝒹 and 𝟙𝟚𝟛",
]

MARKS = [
    "e\u0301 vs \u00e9, a\u0308 vs \u00e4, n\u0303 vs \u00f1",
    "Z\u0334\u0321\u032aa\u0336\u0317l\u0338\u0316g\u0335\u0353o\u0337\u0324 t\u0336e\u0338x\u0335t\u0334",
    "\u1100\u1161\u11a8 (decomposed Hangul) vs \uac01",
    "combining at start: \u0301\u0302abc and after space: x \u0303y",
    "Devanagari virama: \u0915\u094d\u0937 \u0924\u094d\u0930 \u091c\u094d\u091e",
    "Arabic harakat: \u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f",
]

SPECIAL = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "text<|endoftext|>more text", "<|im_end|><|im_start|>", "<<|im_end|>>",
    "<|im_start", "im_start|>", "< |im_start| >", "<repo_name>aquakv<file_sep>src/main.cpp",
    "<filename>a.py\n<gh_stars>100\n<jupyter_code>print(1)", " <|im_start|> spaced ",
    "<|im_start|><|im_start|><|im_start|>", "<issue_start>title<issue_comment>body<issue_closed>",
    "<empty_output><jupyter_output><jupyter_text><jupyter_start><jupyter_script><reponame>",
]

CONTRACTIONS = [
    "don't won't can't I'll we've they're she's I'm he'd it's y'all",
    "DON'T WON'T I'LL WE'VE THEY'RE SHE'S I'M HE'D", "'s 't 're 've 'm 'll 'd 'x",
    "rock 'n' roll, 'quoted', ''double'', it’s curly’s", "O'Neil's 'S 'T 'Re 'rE",
]

MISC = [
    "", " ", "a", "\n", "\t", "Hello, world!", "https://example.com/path?q=1&r=a%20b#frag",
    "user.name+tag@example.co.uk", "C:\\Program Files\\App\\app.exe",
    "# Title\n\n* item **bold** _it_ `code`\n\n> quote\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    '{"key": [1, 2.5, null, true], "nested": {"x": "y\\n"}}',
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "a" * 3000, "ab" * 700, "xyz123" * 200, "The" * 300, "\u00e9" * 500,
    "ThisIsAVeryLongCamelCaseIdentifierWithoutSpacesThatGoesOnAndOnForQuiteAWhile" * 5,
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "____init____ --verbose ... ??? !!! ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}} <<< >>>",
    "$100 €200 £300 ¥400 ₹500 ₿0.01 100% 5° 3×4=12 ±1 ≤ ≥ ≠ ∞ ∑ √ π",
    "\u00a0non\u00a0breaking\u00a0spaces\u00a0and\u3000ideographic\u3000space\u2003em",
    "\u200bzero\u200bwidth\u200cjoiners\u200d and \ufeffBOM and soft\u00adhyphen",
    "control chars \x01\x02\x1b[31mred\x1b[0m \x7f end", "\u2028line sep\u2029para sep\x85nel",
    "private use \ue000\uf8ff and unassigned \u0378\u0380 and noncharacter \ufffe\uffff",
]


def prose(rng):
    out = []
    for name, budget in (("wiki.txt", 62000), ("c4.txt", 26000)):
        text = open(os.path.join(SHARED, "data/calibration", name), encoding="utf-8").read()
        lines = [l for l in text.split("\n") if l.strip()]
        start = rng.randrange(0, max(1, len(lines) // 2))
        used = 0
        i = start
        while used < budget and i < len(lines):
            piece = lines[i]
            if len(piece) > 1500:
                piece = piece[:1500]
            # Paragraph pieces with their line break, and now and then two lines joined.
            if rng.random() < 0.3 and i + 1 < len(lines):
                piece = piece + "\n\n" + lines[i + 1][:600]
                i += 1
            out.append(("prose", (piece + "\n").encode()))
            used += len(piece)
            i += 1 + rng.randrange(0, 20)
    return out


def code(rng):
    files = sorted(glob.glob("/root/.pyenv/versions/3.11.7/lib/python3.11/json/*.py"))
    files += sorted(glob.glob("/root/.pyenv/versions/3.11.7/lib/python3.11/textwrap.py"))
    out = []
    used = 0
    for f in files:
        text = open(f, encoding="utf-8").read()
        for chunk in text.split("\n\n"):
            if used > 14000:
                return out
            if chunk.strip() and rng.random() < 0.5:
                out.append(("code", (chunk + "\n\n").encode()))
                used += len(chunk)
    # A little C++, with tabs for indentation.
    cpp = ("#include <vector>\n\ntemplate <typename T>\nT sum(const std::vector<T>& v) {\n"
           "\tT s{};\n\tfor (const auto& x : v) s += x;  // accumulate\n\treturn s;\n}\n\n"
           "int main(int argc, char** argv) {\n\tif (argc != 2) { return 1; }\n"
           "\tstd::printf(\"%d\\n\", sum<int>({1, 2, 3}));\n}\n")
    out.append(("code", cpp.encode()))
    return out


def numbers(rng):
    out = []
    for _ in range(120):
        k = rng.randrange(7)
        if k == 0:
            s = str(rng.randrange(10 ** rng.randrange(1, 25)))
        elif k == 1:
            s = f"{rng.uniform(-1e6, 1e6):.{rng.randrange(0, 8)}f}"
        elif k == 2:
            s = f"{rng.randrange(1, 10**9):,}"
        elif k == 3:
            s = f"{rng.random():.3e} {rng.randrange(2**32):#x} {rng.randrange(2**16):#b}"
        elif k == 4:
            s = f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}"
        elif k == 5:
            s = f"+1 ({rng.randrange(100, 999)}) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
        else:
            s = "v" + ".".join(str(rng.randrange(30)) for _ in range(rng.randrange(2, 5)))
        out.append(("numbers", f"Value {s} units; {s}{s}".encode()))
    out.append(("numbers", "１２３４５ ٠١٢٣٤ ०१२३४ ²³¹ ½¼¾ ⅓ Ⅻ ⑨ 0.5e-10 1e+308 -0 NaN".encode()))
    return out


def whitespace(rng):
    out = []
    ws = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2003", "\x0b", "\x0c"]
    for _ in range(120):
        parts = []
        for _ in range(rng.randrange(1, 8)):
            parts.append("".join(rng.choice(ws) for _ in range(rng.randrange(0, 12))))
            parts.append(rng.choice(["word", "x", "123", "!", "é", "漢", "", "a.b", "'s"]))
        out.append(("whitespace", "".join(parts).encode()))
    for n in (1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 64):
        out.append(("whitespace", (" " * n + "x" + " " * n).encode()))
        out.append(("whitespace", ("\n" * n + "y" + "\t" * n).encode()))
    return out


def random_unicode(rng):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F),
              (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x2BFF), (0x3000, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xF900, 0xFFFD), (0x10000, 0x1FAFF),
              (0x20000, 0x2A6DF), (0xE0000, 0xE007F)]
    out = []
    for _ in range(150):
        chars = []
        for _ in range(rng.randrange(1, 60)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
            if rng.random() < 0.15:
                chars.append(" ")
        out.append(("random", "".join(chars).encode("utf-8", "surrogatepass")))
    return out


def malformed(rng):
    # Byte strings that are not valid UTF-8. Code points above U+10FFFF are left out: the
    # reference tokenizer throws on them.
    cases = [b"\xff", b"abc\xffdef", b"\xc3", b"\xc3(", b"caf\xc3", b"\xe2\x82", b"\xe2\x82(",
             b"\xf0\x9f\x98", b"\x80\x81\x82", b"\xed\xa0\x80 surrogate", b"\xc0\x80 overlong",
             b"\xe0\x80\xaf overlong slash", b"x\xfe\xfey", b"\xf8\x88\x80\x80\x80",
             b"ok \xe6\x97\xa5\xe6\x9c\xac \xe6\x97 end"]
    for _ in range(25):
        cases.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
    out = []
    for c in cases:
        try:
            c.decode("utf-8")
            kind = "bytes"
        except UnicodeDecodeError:
            kind = "malformed"
        out.append((kind, c))
    return out


def pieces(seed=1234):
    rng = random.Random(seed)
    out = prose(rng) + code(rng) + numbers(rng) + whitespace(rng)
    for group, kind in ((SCRIPTS, "scripts"), (EMOJI, "emoji"), (MARKS, "marks"),
                        (SPECIAL, "special"), (CONTRACTIONS, "contractions"), (MISC, "misc")):
        out += [(kind, s.encode()) for s in group]
    for s in SCRIPTS:  # word-shuffled variants of the non-Latin lines
        words = s.split(" ")
        for _ in range(3):
            rng.shuffle(words)
            out.append(("scripts", " ".join(words).encode()))
    out.append(("scripts", "\n".join(SCRIPTS).encode()))
    out += random_unicode(rng) + malformed(rng)
    return out
