"""Offline, deterministic template generator of two-speaker emotional dialogues.

Stands in for the GPT-4o-mini writer of the EmoPrism dataset (Lee et al. 2025): given a
topic and one of Ekman's six emotions it composes a short A/B dialogue about the topic
that conveys the emotion, either naming it (``explicit``) or only through the situation
and the speakers' reactions (``implicit``).

Dialogues are assembled from per-emotion phrase tables (situations, listener reactions,
follow-ups, closings, shared echoes, explicit naming lines) and shared neutral pools
(openers, lead-ins, connective turns).  Turn count (3..8), who experienced the event
(A or B), whether the listener shares the feeling, and sentence order are all drawn from
the RNG, so the emotion cannot be read off one fixed phrase.

Every situation template contains the ``{topic}`` slot, so dialogues of different topics
never coincide; each (topic, emotion, k) gets its own RNG derived from a SHA-256 hash, so
adding or removing topics never changes the dialogues of the others.

Caveat: the implicit style guarantees that no ``EMOTION_LEXICON`` word comes from the
templates; a topic string that itself contains such a word (e.g. "Happy Hour") will
still carry it into the dialogue.
"""

from __future__ import annotations

import hashlib
import random
import re

EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
STYLES = ("explicit", "implicit")
SPLITS = ("train", "eval")
# The story-bearing tables, partitioned per emotion between the train and the eval pool (see pool()).
PARTITIONED = ("situations", "reactions", "followups")

_MAX_ATTEMPTS = 50
_MAX_SENTENCES = 3

# ---------------------------------------------------------------------------
# Lexicon: the words/phrases that count as *naming* an emotion.
# Implicit dialogues contain none of these (word-boundary, case-insensitive);
# explicit dialogues contain at least one of their own emotion's entries.
# ---------------------------------------------------------------------------
EMOTION_LEXICON: dict[str, tuple[str, ...]] = {
    "anger": (
        "anger", "angry", "angrier", "angered", "furious", "fury", "livid", "fuming",
        "outrage", "outraged", "mad", "irritated", "irritating", "irritation",
        "seething", "enraged", "rage", "raging", "infuriated", "infuriating",
        "annoyed", "annoying", "annoyance", "frustrated", "frustrating", "frustration",
        "pissed", "incensed", "irate", "hate", "resent", "resentful", "resentment",
    ),
    "disgust": (
        "disgust", "disgusted", "disgusting", "gross", "grossed out", "revolting",
        "revolted", "repulsive", "repulsed", "nauseating", "nauseated", "vile",
        "sickening", "sickened", "appalled", "appalling", "repugnant", "nasty", "nastiest",
        "icky", "yucky", "loathsome", "abhorrent",
    ),
    "fear": (
        "fear", "fearful", "afraid", "scared", "scary", "terrified", "terrifying",
        "frightened", "frightening", "anxious", "anxiety", "nervous", "panic",
        "panicked", "panicking", "petrified", "dread", "dreading", "worried", "worry",
        "worrying", "alarmed", "uneasy", "spooked", "horrified", "freaked out",
        "freaking out", "creepy",
    ),
    "happiness": (
        "happy", "happier", "happiest", "happiness", "thrilled", "delighted",
        "overjoyed", "joy", "joyful", "ecstatic", "glad", "elated", "cheerful",
        "excited", "exciting", "pleased", "over the moon", "on cloud nine", "giddy",
        "bliss", "blissful",
    ),
    "sadness": (
        "sad", "sadder", "saddest", "sadness", "heartbroken", "heartbreaking",
        "devastated", "devastating", "miserable", "depressed", "depressing", "unhappy",
        "gloomy", "sorrow", "grief", "grieving", "melancholy", "dejected", "despair",
        "upset", "crushed", "lonely", "gutted", "downcast",
    ),
    "surprise": (
        "surprise", "surprised", "surprising", "surprisingly", "shock", "shocked",
        "shocking", "astonished", "astonishing", "amazed", "amazing", "stunned",
        "speechless", "astounded", "flabbergasted", "taken aback", "startled",
        "blown away", "dumbfounded", "off guard",
    ),
}


def _lexicon_pattern(entry: str) -> re.Pattern[str]:
    """Compile a word-boundary, case-insensitive pattern for one lexicon entry."""
    body = r"\s+".join(re.escape(part) for part in entry.split())
    return re.compile(r"\b" + body + r"\b", re.IGNORECASE)


_LEXICON_RE = {e: [(w, _lexicon_pattern(w)) for w in ws] for e, ws in EMOTION_LEXICON.items()}


def lexicon_hits(text: str) -> dict[str, list[str]]:
    """Map each emotion to the lexicon entries found in text (only emotions with hits)."""
    hits: dict[str, list[str]] = {}
    for emotion, patterns in _LEXICON_RE.items():
        found = [w for w, p in patterns if p.search(text)]
        if found:
            hits[emotion] = found
    return hits


# ---------------------------------------------------------------------------
# Per-emotion phrase tables.  Everything except explicit_self / explicit_other is
# free of lexicon words and is used by both styles.  Situations are first person
# (spoken by the one who lived it); reactions/closings_listener by the other one.
# ---------------------------------------------------------------------------
EMOTION_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "anger": {
        "situations": (
            "The {topic} club I joined kicked me out without giving a single reason.",
            "I spent three weeks on my {topic} project and my coworker just presented it to the boss as his own.",
            "They cancelled my booking for the {topic} workshop for the third time, and nobody even called!",
            "Someone on the {topic} forum deleted all my posts and then accused me of spamming.",
            "The organizer of the {topic} meetup promised me a speaking slot and then gave it to his friend at the last minute.",
            "My neighbor borrowed my books on {topic} and returned them soaked and torn, without a word.",
            "The course on {topic} I paid for was a recycled video with half the lessons missing, and they refuse to refund me.",
            "I waited two hours in line for the {topic} talk, and they called it off without telling anyone outside.",
            "My brother posted my private notes on {topic} online and thinks it's hilarious.",
            "The guy running the {topic} group cuts me off every single time I open my mouth.",
            "I was told the {topic} position was mine, and then they gave it to the manager's nephew.",
            "Somebody dented my car in the parking lot at the {topic} event and just drove off.",
            "The company charged me twice for the {topic} subscription and now claims it's my fault.",
            "My teammate skipped every meeting about our {topic} presentation and still took half the credit.",
            "The moderator of the {topic} channel banned me for asking one simple question.",
            "I lent my friend money for his {topic} plans, and now he pretends he never borrowed it.",
            "They changed the rules of the {topic} contest after I had submitted my entry, just to disqualify me.",
            "A reviewer trashed my article on {topic} without reading past the title.",
        ),
        "reactions": (
            "Unbelievable. They can't treat you like that.",
            "Are you kidding me? That's completely unacceptable.",
            "Who do they think they are?",
            "That's just wrong, and they know it.",
            "Seriously? After everything you put into it?",
            "That is so unfair. I'd be banging on their door right now.",
            "What nerve. Did you say anything to them?",
            "Oh, come on. That's a total disgrace.",
            "They have some nerve pulling a stunt like that.",
            "No way. You need to call them out on it.",
            "That's ridiculous, nobody should have to put up with that.",
            "I can't believe they think they can get away with that.",
            "Wow, that's low, even for them.",
        ),
        "followups": (
            "I called them four times and every time they put me on hold and hung up.",
            "When I asked for an explanation, they just shrugged and walked away.",
            "The worst part is that they acted like I was the problem.",
            "I've gone over it a hundred times and they have no excuse.",
            "They didn't even have the decency to apologize.",
            "I slammed my laptop shut so hard I thought I broke it.",
            "I'm done being polite about it.",
            "It turns out they've done the exact same thing to other people.",
            "I bit my tongue in the moment, but I've been pacing around the apartment ever since.",
            "Every time I think about it, I want to throw something.",
            "They just laughed when I brought it up, like it was a joke.",
            "It's not even about the money anymore, it's about respect.",
        ),
        "closings": (
            "I'm going to give them a piece of my mind tomorrow.",
            "I'm writing a formal complaint tonight, and I'm not letting this go.",
            "They're going to hear from me, that's for sure.",
            "If they think I'll just walk away quietly, they're wrong.",
            "I'm cutting ties with them and telling everyone exactly why.",
            "Next time someone pulls that on me, I won't stay quiet.",
            "I need to go for a run before I say something I regret.",
            "Enough is enough. I'm taking this straight to their boss.",
            "I'm leaving a review they won't forget.",
        ),
        "closings_listener": (
            "Give them hell. You have every right to.",
            "If you want, I'll help you draft that complaint right now.",
            "Don't let them off the hook this time.",
            "Count me in if you decide to confront them.",
            "Let me know what they say, and if they brush you off again, we escalate.",
            "Honestly, they deserve every word you're going to say.",
        ),
        "echoes": (
            "The same thing happened to me last year, and it still makes my blood boil.",
            "Just hearing this makes me want to march over there myself.",
            "I'm clenching my fists just listening to you.",
            "People like that drive me up the wall.",
            "That kind of arrogance gets under my skin every time.",
            "Honestly, I'd have lost my temper on the spot.",
        ),
        "explicit_self": (
            "I'm absolutely furious.",
            "Honestly, I'm livid.",
            "I'm so angry I can barely think straight.",
            "I've been fuming about it all day.",
            "I'm outraged, to be honest.",
            "I'm really mad about it.",
            "I'm irritated beyond words.",
            "I'm seething right now.",
            "It makes me so angry.",
            "I'm completely infuriated.",
            "I'm so annoyed I could scream.",
            "I'm beyond frustrated.",
            "I've never been this enraged.",
        ),
        "explicit_other": (
            "No wonder you're furious.",
            "You have every right to be angry.",
            "I'd be livid too.",
            "I'm getting mad just hearing about it.",
            "That would make anyone furious.",
            "Honestly, that's infuriating.",
            "I'd be seething if I were you.",
            "Of course you're fuming.",
            "I get why you're so frustrated.",
        ),
    },
    "disgust": {
        "situations": (
            "I found a long hair baked into the bread at the {topic} workshop lunch, and the cook just picked it out and served it anyway.",
            "The kitchen at the {topic} event had mold growing all over the cutting boards.",
            "Someone at the {topic} meetup sneezed right into the snack bowl and then kept eating from it.",
            "I opened the fridge at the {topic} club and something in there had turned green and was leaking.",
            "The guy next to me at the {topic} talk was clipping his toenails during the presentation.",
            "I found out the head of the {topic} group has been pocketing the members' dues and lying about it.",
            "The restroom at the {topic} venue had clearly not been cleaned in weeks.",
            "A speaker at the {topic} conference made jokes mocking disabled people, and half the room laughed.",
            "I bit into a sandwich at the {topic} fair and there was a worm in the lettuce.",
            "My roommate left the dishes from his {topic} party in the sink for two weeks, and now there are maggots.",
            "The hotel for the {topic} trip had stained sheets and something crawling in the shower.",
            "I watched a vendor at the {topic} market lick his fingers and then hand out free samples.",
            "Someone in the {topic} chat has been sending inappropriate messages to the teenage members.",
            "The instructor of the {topic} class spat on the floor in front of everyone, twice.",
            "I stepped in a puddle of vomit outside the {topic} hall and it soaked right through my shoe.",
            "A politician who talks about {topic} all the time was caught taking bribes from the people he was supposed to regulate.",
            "The tap water at the {topic} camp came out brown and smelled like rotten eggs.",
        ),
        "reactions": (
            "Ew. Please tell me you didn't eat anything after that.",
            "Ugh, I think I just lost my appetite.",
            "That makes my skin crawl.",
            "How do people live like that?",
            "Oh no, I'm gagging just picturing it.",
            "That's unsanitary on so many levels.",
            "I'd have walked out immediately and never come back.",
            "Some people have absolutely no shame.",
            "Ugh, why would anyone do that?",
            "That's foul. Did anyone say something?",
            "I need to wash my hands just from hearing that.",
            "Honestly, that's just rotten.",
            "Eww, stop, I'm eating right now.",
        ),
        "followups": (
            "The smell stuck to my clothes for the rest of the day.",
            "Nobody else seemed to care, which made it even worse.",
            "I couldn't stop thinking about it all through dinner.",
            "When I pointed it out, they just shrugged and said it happens all the time.",
            "I actually had to step outside to get some fresh air.",
            "I threw away everything I'd touched there.",
            "It turns out this has been going on for months.",
            "I scrubbed my hands three times and they still didn't feel clean.",
            "I keep picturing it every time I close my eyes.",
            "And then they had the nerve to invite me back next week.",
            "My stomach turned the moment I realized what it was.",
        ),
        "closings": (
            "I'm never setting foot in that place again.",
            "I'm done with them, I can't even look at them the same way.",
            "I think I'll skip lunch for the next few days.",
            "Someone should report them to the health inspector, and it might as well be me.",
            "I'm going to take a very long, very hot shower.",
            "I just want to forget I ever saw it.",
            "That's the last time I trust anything they serve.",
            "I unsubscribed and blocked them everywhere.",
        ),
        "closings_listener": (
            "Please promise me you'll never eat there again.",
            "Report them. Nobody should have to see that.",
            "I'm crossing them off my list for good.",
            "Let's change the subject before I lose my lunch.",
            "Go wash up, and then let's never speak of this again.",
            "Good thing you got out of there.",
        ),
        "echoes": (
            "Ugh, I'm cringing just thinking about it.",
            "I saw something like that once and couldn't eat for a day.",
            "My stomach is turning just from your description.",
            "People like that make me want to scrub my eyes.",
            "I can practically smell it from here.",
            "That's the kind of thing I can't unsee.",
        ),
        "explicit_self": (
            "It was absolutely disgusting.",
            "I felt so disgusted.",
            "It was honestly revolting.",
            "The whole thing was gross.",
            "I was completely repulsed.",
            "It was nauseating, really.",
            "I've never seen anything so vile.",
            "It was sickening to watch.",
            "I'm appalled, honestly.",
            "It was repugnant.",
            "I was so grossed out I almost left.",
            "It was the nastiest thing I've ever seen.",
        ),
        "explicit_other": (
            "That's disgusting.",
            "That's so gross.",
            "How revolting.",
            "I'm disgusted just hearing it.",
            "What a vile thing to do.",
            "That's nauseating.",
            "Honestly, that's repulsive.",
            "I'd be appalled too.",
        ),
    },
    "fear": {
        "situations": (
            "I heard footsteps following me all the way home from the {topic} meetup last night.",
            "My doctor called about the tests I took before the {topic} trip and wants to see me in person tomorrow.",
            "Someone left a note on my door saying they know what I posted about {topic}.",
            "The brakes on my car gave out on the way to the {topic} event and I barely stopped in time.",
            "I have to present my {topic} research to two hundred people on Monday, and I keep blanking on the first slide.",
            "There's talk of layoffs in the {topic} department and my name is apparently on a list.",
            "The plane to the {topic} conference dropped so suddenly that people's drinks hit the ceiling.",
            "My daughter hasn't answered her phone since she left for the {topic} camp this morning.",
            "Someone tried to open my window at three in the morning, the night after the {topic} party.",
            "I got lost on the trail back from the {topic} retreat just as the sun was going down.",
            "I got a letter from a lawyer about my {topic} blog, and it says they might sue me.",
            "The building where the {topic} class meets started shaking in the middle of the lesson.",
            "A stranger at the {topic} fair knew my full name and where I live.",
            "My results for the {topic} exam come out tomorrow, and everything depends on them.",
            "The lights went out in the {topic} hall and then someone started screaming in the dark.",
            "I found out the bridge I cross every day to get to the {topic} office has cracks nobody ever fixed.",
        ),
        "reactions": (
            "Oh no. That sounds really serious.",
            "Okay, take a deep breath.",
            "Do you want me to come over?",
            "Is there anything I can do to help?",
            "Stay with me for a bit, okay? You shouldn't be alone right now.",
            "Wait, do you know what happens next?",
            "That would keep me up all night.",
            "That's the kind of thing nightmares are made of.",
            "Let's think this through step by step.",
            "Oh no. How are you holding up?",
            "Have you told anyone else about this?",
            "Whatever it is, you won't face it alone.",
            "Are you somewhere safe right now?",
        ),
        "followups": (
            "I haven't slept properly since.",
            "My hands haven't stopped shaking.",
            "I keep checking my phone every ten minutes.",
            "What if it happens again and I'm not so lucky next time?",
            "I keep imagining the worst possible outcome.",
            "My heart was pounding so hard I could hear it.",
            "I couldn't breathe properly for a good minute.",
            "I jump every time my phone buzzes now.",
            "I don't know what I'll do if it goes wrong.",
            "I froze completely, I couldn't even scream.",
            "I left every light in the house on last night.",
        ),
        "closings": (
            "I just want this to be over.",
            "I'm not going to sleep tonight, I know it.",
            "I'll call you the moment I know more.",
            "I just hope it turns out okay.",
            "Please keep your phone on tonight, just in case.",
            "I'm staying at my sister's place for a few days.",
            "I keep telling myself it'll be fine, but I don't believe it.",
            "I'm not going anywhere alone for a while.",
        ),
        "closings_listener": (
            "Call me the second anything happens, no matter the time.",
            "I'll stay on the phone with you until you get home.",
            "Let me come with you tomorrow, you shouldn't face this alone.",
            "Lock the door and text me when you're inside.",
            "Whatever happens, I'm right here.",
            "Let's get you somewhere safe first, then we figure out the rest.",
        ),
        "echoes": (
            "My heart is pounding just listening to you.",
            "I've got goosebumps all over.",
            "Now I'm going to be looking over my shoulder too.",
            "Something similar happened to me, and I still can't sleep with the lights off.",
            "My stomach just dropped.",
            "I don't think I could have kept it together.",
        ),
        "explicit_self": (
            "I'm terrified.",
            "I was so scared I couldn't move.",
            "Honestly, I'm afraid of what comes next.",
            "I'm really frightened.",
            "I'm so anxious I can't eat.",
            "I've been nervous all day.",
            "I'm petrified.",
            "I was panicking the whole time.",
            "I'm dreading tomorrow.",
            "I'm worried sick.",
            "I'm completely freaked out.",
            "I've never felt fear like this.",
        ),
        "explicit_other": (
            "You must be terrified.",
            "That's really scary.",
            "I'd be scared out of my mind.",
            "No wonder you're so anxious.",
            "That's frightening, honestly.",
            "Anyone would be afraid in your place.",
            "I'm worried about you.",
            "I'd be panicking too.",
        ),
    },
    "happiness": {
        "situations": (
            "I just got accepted into the {topic} program I applied to last year!",
            "My talk on {topic} got a standing ovation this morning.",
            "The {topic} project I've been working on for months finally launched, and people love it.",
            "My grandmother came to the {topic} festival with me and danced all evening.",
            "I won first prize in the {topic} competition!",
            "My article about {topic} got published in a real magazine.",
            "I got the {topic} job, and they're paying more than I asked for!",
            "My best friend flew in for the {topic} weekend without telling me, and we had the best time.",
            "After years of saving, I finally bought the {topic} gear I always wanted.",
            "My kids spent the whole afternoon helping me with my {topic} project, and they already want to do it again.",
            "The {topic} club voted me in as president, and everyone cheered.",
            "I met the person who got me into {topic} in the first place, and they remembered my name.",
            "My blog about {topic} just passed ten thousand readers.",
            "We closed the deal on the {topic} venture and the whole team went out to celebrate.",
            "I finally finished the {topic} course, and I passed with top marks!",
            "My mentor from the {topic} workshop wrote me the kindest letter I've ever received.",
        ),
        "reactions": (
            "That's fantastic! You totally deserve it.",
            "No way, congratulations!",
            "Oh, that's wonderful news!",
            "I knew you could do it!",
            "This calls for a celebration!",
            "You must be grinning from ear to ear.",
            "That's the best thing I've heard all week.",
            "Look at you! All that hard work paid off.",
            "Yes! I'm so proud of you.",
            "That's brilliant, well done!",
            "Aw, that's so lovely. Tell me everything.",
            "Oh, I love that for you.",
            "That's incredible news, seriously.",
        ),
        "followups": (
            "I've been smiling all day, my cheeks actually hurt.",
            "I called my mom right away and she laughed and cried at the same time.",
            "I honestly didn't think it would ever happen.",
            "Everyone was clapping, and I just stood there grinning like an idiot.",
            "I keep rereading the email just to make sure it's real.",
            "It feels like all the late nights were worth it.",
            "I literally jumped up and down in the kitchen.",
            "I want to hug everyone I meet today.",
            "It's like a dream, honestly.",
            "The whole family is coming over tonight to raise a toast.",
            "I couldn't stop laughing on the way home.",
        ),
        "closings": (
            "Dinner's on me tonight, I insist!",
            "I'm going to remember this day forever.",
            "Let's celebrate this weekend, my treat.",
            "I can't wait to see what comes next.",
            "Life is good right now, really good.",
            "I'm putting on some music and dancing around the living room.",
            "Thanks for listening, I just had to tell someone.",
            "Today is officially the best day of the year.",
        ),
        "closings_listener": (
            "Let's go out and celebrate, my treat!",
            "Cheers to you! You earned every bit of it.",
            "Enjoy every minute of it, you deserve this.",
            "Send me pictures, I want to see everything!",
            "Seriously, well done. You should be proud.",
            "This made my whole day, thank you for telling me.",
        ),
        "echoes": (
            "I'm grinning just hearing this.",
            "This honestly made my whole week.",
            "I've got a huge smile on my face right now.",
            "I could hug you right now!",
            "Stop, I'm getting all warm and fuzzy.",
            "Hearing good news like this never gets old.",
        ),
        "explicit_self": (
            "I'm so happy.",
            "I'm absolutely thrilled.",
            "I'm over the moon.",
            "Honestly, I'm overjoyed.",
            "I've never been this excited.",
            "I'm delighted, really.",
            "I'm just so glad it worked out.",
            "I'm ecstatic.",
            "I'm on cloud nine.",
            "I feel pure joy.",
            "I'm elated.",
            "I'm so pleased with how it went.",
        ),
        "explicit_other": (
            "I'm so happy for you!",
            "You must be thrilled.",
            "I'm delighted for you.",
            "I'm so glad to hear it.",
            "You sound over the moon.",
            "What a joy to hear that.",
            "I'm genuinely excited for you.",
            "That makes me so happy.",
        ),
    },
    "sadness": {
        "situations": (
            "My old dog passed away this morning, and he used to sit with me while I read about {topic}.",
            "The {topic} club I helped run for ten years is shutting down for good.",
            "My grandfather, who taught me everything about {topic}, is in the hospital and they say he doesn't have long.",
            "My best friend is moving across the world, so our {topic} evenings are over.",
            "I didn't get into the {topic} program, after trying for the third year in a row.",
            "I found my late mother's notes on {topic} while clearing out her house.",
            "Nobody came to my {topic} talk, not a single person.",
            "My partner and I broke up, and everything about {topic} reminds me of our trips together.",
            "The little shop where I spent every Saturday as a kid reading about {topic} closed today.",
            "I lost all my {topic} work when my laptop died, years of it.",
            "My mentor in {topic} retired without saying goodbye to anyone.",
            "I walked past the café where we used to talk about {topic} for hours, and it's just an empty shell now.",
            "My son says he's too old to come to the {topic} events with me anymore.",
            "The {topic} group chat used to be so lively, and now nobody writes anymore.",
            "I had to give away all my {topic} things because we're moving into a tiny apartment.",
            "My oldest friend forgot my birthday, and we used to celebrate it together at the {topic} fair every year.",
        ),
        "reactions": (
            "Oh no, I'm so sorry.",
            "That's really hard. Do you want to talk about it?",
            "Come here. Take all the time you need.",
            "I'm so sorry, I know how much that meant to you.",
            "That's a huge loss.",
            "Oh, that hurts. I wish I could do something.",
            "I remember how much you loved it.",
            "I'm here for you, whatever you need.",
            "Is there anything at all I can do?",
            "That's so unfair, you didn't deserve that.",
            "It's okay to cry, you know.",
            "I can't imagine how that must feel.",
            "It sounds like the end of an era.",
        ),
        "followups": (
            "I keep expecting things to go back to how they were.",
            "The house feels so empty now.",
            "I couldn't stop crying on the way home.",
            "I just sat in the car for an hour, staring at nothing.",
            "I haven't really eaten since I heard.",
            "Everything reminds me of how it used to be.",
            "I keep replaying our last conversation.",
            "It feels like a part of me is missing.",
            "I don't even feel like getting out of bed.",
            "I know life goes on, but right now it doesn't feel like it.",
            "I wish I'd said more when I had the chance.",
        ),
        "closings": (
            "I think I just need some time alone.",
            "Thanks for listening, it helps a little.",
            "I'll get through it, I guess, but not today.",
            "I'm going to look through the old photos tonight.",
            "It won't ever be the same.",
            "I just miss how things were.",
            "I'm going to go for a quiet walk and clear my head.",
            "Maybe one day it'll hurt less.",
        ),
        "closings_listener": (
            "Call me anytime, even in the middle of the night.",
            "Let me bring you dinner tonight, you shouldn't have to cook.",
            "Take it one day at a time. I'm not going anywhere.",
            "Whenever you want to talk about it, I'm here.",
            "Be gentle with yourself this week, okay?",
            "I'll check in on you tomorrow.",
        ),
        "echoes": (
            "I've got a lump in my throat just hearing that.",
            "I went through something like that last year, and some days it still hurts.",
            "That brings back memories I'd rather not think about.",
            "My eyes are tearing up a bit, honestly.",
            "I miss those days too.",
            "It feels like losing a piece of home.",
        ),
        "explicit_self": (
            "I feel so sad.",
            "I'm heartbroken.",
            "Honestly, I'm devastated.",
            "I've been miserable all week.",
            "I feel really depressed about it.",
            "I'm so upset about it.",
            "I'm crushed.",
            "I feel so lonely without it.",
            "There's this deep sadness I can't shake.",
            "I think I'm grieving.",
            "Everything feels gloomy.",
            "I'm just so unhappy.",
        ),
        "explicit_other": (
            "That's so sad.",
            "I'm heartbroken for you.",
            "You must be devastated.",
            "That's heartbreaking.",
            "No wonder you're upset.",
            "I'm so sad to hear that.",
            "It's okay to feel miserable for a while.",
            "I can hear the grief in your voice.",
        ),
    },
    "surprise": {
        "situations": (
            "I opened my door this morning and my brother, who I haven't seen in six years, was standing there holding a book on {topic}.",
            "It turns out my quiet neighbor is one of the best-known names in {topic}.",
            "I just found out my grandmother was a champion in {topic} before I was born.",
            "The {topic} test I was sure I failed came back with the top score in the class.",
            "I bumped into my high school teacher at the {topic} convention, on the other side of the country.",
            "They picked my name at random to open the {topic} ceremony, in front of everyone.",
            "My boss, who never talks to anyone, showed up at the {topic} meetup and gave a talk.",
            "The {topic} club announced they're merging with their biggest rival, out of nowhere.",
            "I found an envelope of cash tucked inside a used book on {topic} I bought for a dollar.",
            "My quiet roommate turns out to have a hundred thousand followers for her {topic} videos.",
            "The {topic} event I thought was next month is actually tonight.",
            "A total stranger at the {topic} fair handed me a ticket for a free trip.",
            "My parents just told me they met at the very first {topic} event either of them went to.",
            "The person I've been chatting with on the {topic} forum for years turns out to live on my street.",
            "The {topic} lecture was supposed to be dry, and then the speaker started juggling on stage.",
            "I checked the results of the {topic} vote and the underdog won by a landslide.",
        ),
        "reactions": (
            "Wait, what? Are you serious?",
            "No way. You're kidding me.",
            "Hold on, say that again.",
            "Get out of here, really?",
            "I did not see that coming.",
            "Whoa. How is that even possible?",
            "What are the odds?",
            "You've got to be joking.",
            "Huh. I would never have guessed.",
            "Okay, now I need the whole story.",
            "Wow, talk about out of the blue.",
            "That's wild. How did you find out?",
            "Of all the people, really?",
        ),
        "followups": (
            "I had to read it three times before it sank in.",
            "My jaw literally dropped.",
            "I just stood there with my mouth open.",
            "Nobody saw it coming, not even the people in charge.",
            "I almost dropped my coffee.",
            "I had to sit down for a second.",
            "I'm still trying to wrap my head around it.",
            "I pinched myself to make sure I wasn't dreaming.",
            "I actually laughed out loud because it made no sense.",
            "I called three people right after and none of them believed me.",
            "One minute everything was normal, and the next this happened.",
        ),
        "closings": (
            "I still can't quite believe it happened.",
            "Life really is full of twists.",
            "I'll never look at it the same way again.",
            "I need a minute to process all of this.",
            "I guess you never really know what's around the corner.",
            "I'm going to be thinking about this for days.",
            "Honestly, I don't know what to make of it yet.",
            "Who knows what tomorrow will bring after this.",
        ),
        "closings_listener": (
            "You have to tell me if anything else happens.",
            "Well, that's one for the books.",
            "I'll be thinking about that all day now.",
            "Keep me posted, I need to know how this ends.",
            "That's the best story I've heard in a while.",
            "Never a dull moment with you, huh?",
        ),
        "echoes": (
            "My mouth is literally hanging open right now.",
            "I had to put my phone down for that one.",
            "I would have fallen off my chair.",
            "My brain is still catching up.",
            "I never would have guessed in a million years.",
            "That's the last thing I expected to hear today.",
        ),
        "explicit_self": (
            "I was completely shocked.",
            "I'm honestly stunned.",
            "I was so surprised I couldn't speak.",
            "I'm astonished, really.",
            "I'm still amazed.",
            "It totally caught me off guard.",
            "I was speechless.",
            "I was absolutely flabbergasted.",
            "It left me dumbfounded.",
            "I was taken aback, to say the least.",
            "I'm blown away.",
            "I was so startled I nearly jumped.",
        ),
        "explicit_other": (
            "That's so surprising.",
            "You must have been shocked.",
            "Wow, I'm stunned.",
            "What a surprise!",
            "I'm amazed, honestly.",
            "That's astonishing.",
            "I'm speechless.",
            "That's shocking.",
        ),
    },
}

# ---------------------------------------------------------------------------
# Shared neutral pools (no lexicon words, no emotion of their own).
# ---------------------------------------------------------------------------
NEUTRAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    # A opens and then tells the story in the same turn.
    "openers_tell": (
        "Hey, do you have a minute?",
        "Can I tell you something?",
        "So, about {topic}...",
        "You know the {topic} thing I mentioned?",
        "I need to tell you what happened.",
        "Got a second?",
        "Remember when I told you about {topic}?",
        "Okay, listen to this.",
        "Sorry to bother you, but I need to talk.",
        "Are you busy right now?",
        "I have to tell someone about this.",
        "So, remember the {topic} stuff?",
        "Something happened with {topic} today.",
        "You'll want to hear this.",
    ),
    # A asks; B is the one who tells the story.
    "openers_ask": (
        "Hey, how did the {topic} thing go?",
        "So, any news about {topic}?",
        "How's everything going with {topic}?",
        "Hey, what's new?",
        "You look like you have something on your mind.",
        "How was your day?",
        "Did anything come of the {topic} stuff?",
        "So, what happened with {topic}?",
        "Hi! Long time no see. How have you been?",
        "Hey, how was the weekend?",
        "What's going on with you lately?",
        "Weren't you going to tell me about {topic}?",
        "Tell me, how's life?",
        "You've been quiet. What's up?",
    ),
    # Optional lead-in of the teller when asked.
    "leads": (
        "Well, since you ask.",
        "Actually, there is something.",
        "Funny you should ask.",
        "Oh, where do I even start.",
        "Okay, so.",
        "Well, it's a long story.",
        "Let me tell you.",
        "Where to begin.",
        "You'll never guess.",
    ),
    # Listener turns that prompt the teller to go on.
    "prompts": (
        "Wait, what happened then?",
        "And then what?",
        "Go on.",
        "What did they say?",
        "How did that even happen?",
        "Hold on, back up a second.",
        "When was this?",
        "Did you tell anyone else?",
        "What do you mean?",
        "Tell me more.",
        "Wait, start from the beginning.",
        "So what are you going to do?",
        "Who else knows about this?",
        "What did you do then?",
    ),
    # Optional short connective before a teller's follow-up.
    "connectives": (
        "Yeah.",
        "I know.",
        "Mm-hm.",
        "Tell me about it.",
        "That's not even all of it.",
        "And that's not all.",
        "Listen to this part.",
        "Thanks.",
        "Honestly, there's more.",
        "It's true.",
        "Right.",
        "Yeah, well.",
    ),
}

_SENT_END = re.compile(r"[.!?]+(?=\s|$)")


def _n_sentences(template: str) -> int:
    """Number of sentences in a template (counted before topic substitution)."""
    return max(1, len(_SENT_END.findall(template)))


def _check_emotion(emotion: str) -> None:
    """Raise ValueError naming emotion if it is not one of EMOTIONS."""
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS}")


def _check_style(style: str) -> None:
    """Raise ValueError naming style if it is not one of STYLES."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def _check_split(split: str | None) -> None:
    """Raise ValueError naming split if it is not None or one of SPLITS."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected None or one of {SPLITS}")


def in_eval_pool(index: int) -> bool:
    """Whether the template at this index of a partitioned table belongs to the eval pool (i % 5 in {1, 3}: 40%)."""
    return index % 5 in (1, 3)


def pool(emotion: str, split: str | None) -> dict[str, tuple[str, ...]]:
    """An emotion's phrase tables for a split: PARTITIONED tables keep only that split's part; None = everything."""
    _check_emotion(emotion)
    _check_split(split)
    bank = EMOTION_TEMPLATES[emotion]
    if split is None:
        return dict(bank)
    return {k: tuple(t for i, t in enumerate(v) if in_eval_pool(i) == (split == "eval")) if k in PARTITIONED else v
            for k, v in bank.items()}


class _Pool:
    """Draws templates from a tuple without replacement (refills when exhausted)."""

    def __init__(self, rng: random.Random, items: tuple[str, ...]):
        self._rng = rng
        self._items = items
        self._left: list[str] = []

    def draw(self) -> str:
        """Return the next template, never repeating one until the pool is used up."""
        if not self._left:
            self._left = list(self._items)
            self._rng.shuffle(self._left)
        return self._left.pop()


class _Turn:
    """One turn under construction: optional pre/post units around core units."""

    def __init__(self, speaker: str, role: str, core: list[str]):
        self.speaker = speaker
        self.role = role
        self.pre: list[str] = []
        self.core = core
        self.post: list[str] = []

    def size(self) -> int:
        """Total sentence count of the turn."""
        return sum(_n_sentences(u) for u in self.pre + self.core + self.post)

    def add(self, unit: str, front: bool) -> bool:
        """Add unit before or after the core if it keeps the turn within the sentence cap."""
        if self.size() + _n_sentences(unit) > _MAX_SENTENCES:
            return False
        self._place(unit, front)
        return True

    def force(self, unit: str, front: bool) -> None:
        """Add unit, dropping optional pre/post units until it fits the sentence cap."""
        while self.size() + _n_sentences(unit) > _MAX_SENTENCES and (self.pre or self.post):
            (self.pre if self.pre else self.post).pop(0)
        self._place(unit, front)

    def _place(self, unit: str, front: bool) -> None:
        """Put unit right before the core (front) or right after it (keeps openers first, prompts last)."""
        if front:
            self.pre.append(unit)
        else:
            self.post.insert(0, unit)

    def render(self, topic: str) -> str:
        """Render as 'A: ...' with the topic substituted."""
        text = " ".join(self.pre + self.core + self.post).replace("{topic}", topic)
        return f"{self.speaker}: {text}"


def generate_dialogue(topic: str, emotion: str, rng: random.Random, style: str, split: str | None = None) -> str:
    """One dialogue from the split's pool (None = all): 3-8 turns 'A: ...' / 'B: ...' joined by '\n', from A."""
    _check_emotion(emotion)
    _check_style(style)
    _check_split(split)
    if not isinstance(topic, str) or not topic.strip():
        raise ValueError(f"topic must be a non-empty string, got {topic!r}")
    bank = {k: _Pool(rng, v) for k, v in pool(emotion, split).items()}
    neutral = {k: _Pool(rng, v) for k, v in NEUTRAL_TEMPLATES.items()}

    n = rng.randint(3, 8)
    teller = rng.choice(("A", "B"))
    shared = rng.random() < 0.35  # the listener voices the feeling too
    speakers = ["A" if i % 2 == 0 else "B" for i in range(n)]
    start = 0 if teller == "A" else 1
    turns: list[_Turn] = []

    if teller == "B":
        turns.append(_Turn("A", "ask", [neutral["openers_ask"].draw()]))
    situation = _Turn(teller, "situation", [bank["situations"].draw()])
    if teller == "A" and rng.random() < 0.45:
        situation.add(neutral["openers_tell"].draw(), front=True)
    elif teller == "B" and rng.random() < 0.4:
        situation.add(neutral["leads"].draw(), front=True)
    turns.append(situation)

    for i in range(start + 1, n):
        last = i == n - 1
        if speakers[i] == teller:
            if last and (n >= 4 or rng.random() < 0.5):
                turns.append(_Turn(teller, "closing", [bank["closings"].draw()]))
            else:
                t = _Turn(teller, "followup", [bank["followups"].draw()])
                # A connective ("Yeah.", "I know.") reads badly as the answer to a question.
                if rng.random() < 0.3 and not (turns[-1].core + turns[-1].post)[-1].endswith("?"):
                    t.add(neutral["connectives"].draw(), front=True)
                turns.append(t)
        else:
            listener = speakers[i]
            if i == start + 1:
                t = _Turn(listener, "reaction", [bank["reactions"].draw()])
                if not last and rng.random() < 0.35:
                    t.add(neutral["prompts"].draw(), front=False)
            elif last:
                key = "closings_listener" if rng.random() < 0.6 else "reactions"
                t = _Turn(listener, "reaction", [bank[key].draw()])
            else:
                u = rng.random()
                if u < 0.3:
                    t = _Turn(listener, "prompt", [neutral["prompts"].draw()])
                else:
                    t = _Turn(listener, "reaction", [bank["reactions"].draw()])
                    if u > 0.75:
                        t.add(neutral["prompts"].draw(), front=False)
            turns.append(t)

    listener_turns = [t for t in turns[start + 1:] if t.speaker != teller]
    if shared:
        target = rng.choice(listener_turns)
        target.force(bank["echoes"].draw(), front=rng.random() < 0.4)

    if style == "explicit":
        teller_turns = [t for t in turns if t.speaker == teller]
        reacting = [t for t in listener_turns if t.role == "reaction"]
        n_explicit = 2 if rng.random() < 0.35 else 1
        chosen: list[_Turn] = []
        for _ in range(n_explicit):
            use_listener = reacting and (rng.random() < (0.5 if shared else 0.3))
            candidates = [t for t in (reacting if use_listener else teller_turns) if t not in chosen]
            if not candidates:
                candidates = [t for t in teller_turns + reacting if t not in chosen]
            if not candidates:
                break
            t = rng.choice(candidates)
            chosen.append(t)
            key = "explicit_self" if t.speaker == teller else "explicit_other"
            t.force(bank[key].draw(), front=rng.random() < 0.5)

    return "\n".join(t.render(topic) for t in turns)


def foreign_templates(dialogue: str, topic: str, emotion: str, split: str) -> list[str]:
    """The PARTITIONED templates of the other split's pool that occur in a dialogue of this split (should be none)."""
    _check_split(split)
    bank = pool(emotion, "eval" if split == "train" else "train")
    return [t for k in PARTITIONED for t in bank[k] if t.replace("{topic}", topic) in dialogue]


def _derived_rng(seed: int, topic: str, emotion: str, k: int, attempt: int) -> random.Random:
    """Stable per-(seed, topic, emotion, k, attempt) RNG from SHA-256 (independent of hash())."""
    key = f"{seed}|{topic}|{emotion}|{k}" + (f"|{attempt}" if attempt else "")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generate_dialogues(topics: list[str], emotions: list[str], per_pair: int, seed: int,
                       explicit_share: float = 0.5, split: str | None = None) -> list[dict]:
    """per_pair dialogues for every (topic, emotion) from the split's pool (None = all); dicts with keys topic, theme, dialogue, style. Deterministic for a seed; no duplicate dialogue strings."""
    for emotion in emotions:
        _check_emotion(emotion)
    _check_split(split)
    if not isinstance(per_pair, int) or per_pair < 0:
        raise ValueError(f"per_pair must be a non-negative int, got {per_pair!r}")
    if not 0.0 <= explicit_share <= 1.0:
        raise ValueError(f"explicit_share must be in [0, 1], got {explicit_share!r}")
    out: list[dict] = []
    seen: set[str] = set()
    for topic in topics:
        for emotion in emotions:
            for k in range(per_pair):
                for attempt in range(_MAX_ATTEMPTS):
                    rng = _derived_rng(seed, topic, emotion, k, attempt)
                    style = "explicit" if rng.random() < explicit_share else "implicit"
                    dialogue = generate_dialogue(topic, emotion, rng, style, split)
                    if dialogue not in seen:
                        break
                else:
                    raise RuntimeError(
                        f"could not draw a new dialogue for topic={topic!r}, emotion={emotion!r}, "
                        f"k={k} after {_MAX_ATTEMPTS} attempts (seed={seed}); "
                        "per_pair is too large for the template space or topics repeat"
                    )
                seen.add(dialogue)
                out.append({"topic": topic, "theme": emotion, "dialogue": dialogue, "style": style})
    return out
