"""Generate the 32-intent assistant data set (deterministic; re-run to regenerate).

A held-out intent set for routing: 32 routes of a personal assistant, 8 example utterances each
(the only labelled data a user has: they go into ``router.yaml`` and ``train.jsonl``), and a test
set of 1,120 messages written apart from them — other templates, other slot values, polite or
terse wrappers, typos in about one in eight — that nothing is ever tuned on. ``oos.jsonl`` holds
messages no route covers (label null), for abstention.

    python examples/intents/make_data.py   # writes router.yaml, train.jsonl, test.jsonl, oos.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
R = random.Random(20261203)
PER_ROUTE_TEST = 35

SLOTS: dict[str, list[str]] = {
    "time": ["6:30", "7 am", "quarter past eight", "noon", "5:45 pm", "9 tonight", "half past six", "10:15"],
    "day": ["tomorrow", "on Friday", "next Monday", "this weekend", "on the 14th", "tonight", "on Thursday morning"],
    "minutes": ["five minutes", "12 minutes", "half an hour", "90 seconds", "an hour", "three minutes", "25 minutes"],
    "city": ["Lisbon", "Chicago", "Osaka", "Nairobi", "Denver", "Glasgow", "Lima", "Hanoi"],
    "artist": ["Miles Davis", "Adele", "Radiohead", "Bach", "Fela Kuti", "Taylor Swift", "Daft Punk"],
    "genre": ["jazz", "lo-fi beats", "classical piano", "90s hip hop", "reggae", "something upbeat"],
    "room": ["kitchen", "bedroom", "living room", "hallway", "office", "garage"],
    "temp": ["68 degrees", "21 celsius", "a bit warmer", "72", "19 degrees", "cooler"],
    "person": ["Priya", "my mom", "Daniel", "Aunt Rosa", "Kenji", "my boss", "the babysitter"],
    "event": ["dentist appointment", "team standup", "lunch with Sam", "yoga class", "parent-teacher meeting", "flight to Boston"],
    "task": ["pick up the dry cleaning", "water the plants", "pay the rent", "call the plumber", "take my pills", "renew my passport"],
    "place": ["the airport", "the nearest pharmacy", "Union Station", "the stadium", "my office", "a gas station"],
    "cuisine": ["Thai", "sushi", "Italian", "vegan", "Mexican", "Ethiopian"],
    "dish": ["a large pepperoni pizza", "pad thai", "two burritos", "a poke bowl", "chicken tikka", "a falafel wrap"],
    "flight": ["UA 921", "BA 117", "Delta 402", "LH 455", "AF 82", "QF 12"],
    "language": ["Spanish", "Japanese", "German", "Swahili", "French", "Portuguese"],
    "phrase": ["where is the train station", "thank you very much", "I am allergic to peanuts", "how much is this", "good morning"],
    "word": ["ephemeral", "ubiquitous", "serendipity", "laconic", "petrichor", "obfuscate"],
    "topic": ["politics", "technology", "the economy", "science", "world", "local"],
    "team": ["the Lakers", "Arsenal", "the Yankees", "Real Madrid", "the Chiefs", "the All Blacks"],
    "stock": ["Apple", "Tesla", "NVIDIA", "Amazon", "Microsoft", "Toyota"],
    "amount": ["50 dollars", "200 euros", "1,000 yen", "75 pounds", "$320", "30 francs"],
    "currency": ["euros", "yen", "pesos", "pounds", "rupees", "Canadian dollars"],
    "math": ["17 times 23", "the square root of 144", "15 percent of 80", "1,234 divided by 6", "2 to the power of 10"],
    "item": ["eggs", "oat milk", "paper towels", "coffee beans", "dish soap", "bananas"],
    "account": ["checking", "savings", "joint", "business"],
    "level": ["3", "7", "max", "half", "20 percent"],
}

# route -> (description, 8 example utterances, test templates written apart from the examples)
ROUTES: dict[str, tuple[str, list[str], list[str]]] = {
    "alarm_set": ("set a wake-up alarm", [
        "set an alarm for 7 am", "wake me up at 6 tomorrow", "I need an alarm at 5:30",
        "alarm for eight o'clock please", "can you set my alarm for 6:45", "make sure I'm up by 7",
        "set a wake up alarm", "create an alarm for tomorrow morning"], [
        "please wake me at {time} {day}", "I have to get up at {time}, set an alarm", "alarm at {time}",
        "could you make an alarm go off at {time} {day}", "get me up at {time}", "set my alarm clock to {time}",
        "I want to be woken up {day} at {time}"]),
    "alarm_cancel": ("cancel or turn off an alarm", [
        "cancel my alarm", "turn off the 7 am alarm", "delete all my alarms", "I don't need the alarm tomorrow",
        "remove the alarm for 6:30", "switch off my morning alarm", "stop the alarm for Saturday", "disable my wake up alarm"], [
        "get rid of the {time} alarm", "no alarm {day} please", "kill the alarm I set for {time}",
        "clear every alarm on my phone", "I'm sleeping in {day}, cancel the alarm", "deactivate the {time} alarm",
        "the alarm for {time} isn't needed anymore"]),
    "timer_set": ("start a countdown timer", [
        "set a timer for 10 minutes", "start a 5 minute timer", "timer for twenty minutes please",
        "count down 30 seconds", "remind me in 15 minutes when the pasta is done", "start a countdown for an hour",
        "I need a timer", "set the oven timer for 45 minutes"], [
        "start counting down {minutes}", "timer {minutes}", "let me know when {minutes} is up",
        "put a {minutes} timer on", "I'm boiling eggs, give me a timer for {minutes}", "countdown of {minutes} please",
        "ring in {minutes}"]),
    "weather": ("weather forecasts and conditions", [
        "what's the weather like today", "will it rain tomorrow", "how hot is it outside",
        "is it going to snow this weekend", "weather forecast for Paris", "do I need an umbrella today",
        "what's the temperature right now", "how windy is it going to be"], [
        "what's the forecast in {city} {day}", "should I bring a jacket {day}", "is it sunny in {city}",
        "how cold will it get {day}", "any storms expected in {city}", "tell me the weather for {city}",
        "will there be showers {day}"]),
    "music_play": ("play music, songs, artists or playlists", [
        "play some music", "put on my workout playlist", "play the new Beyonce album", "I want to listen to jazz",
        "play Bohemian Rhapsody", "shuffle my liked songs", "start some relaxing music", "play songs by the Beatles"], [
        "play {artist}", "I'd like to hear some {genre}", "can you put on {genre}", "start a {artist} station",
        "queue up songs by {artist}", "some {genre} would be nice right now", "play my favourite {artist} tracks"]),
    "volume": ("change the speaker volume", [
        "turn the volume up", "make it louder", "lower the volume", "turn it down a bit", "set volume to 50 percent",
        "mute the speaker", "it's too loud", "increase the sound"], [
        "crank it up", "volume down please", "I can barely hear it", "quieter please, the baby is asleep",
        "set the speaker volume to {level}", "unmute", "bring the volume down a notch"]),
    "lights": ("turn lights on or off, dim or brighten them", [
        "turn on the lights", "switch off the kitchen light", "dim the living room lights", "lights off please",
        "make the bedroom brighter", "turn the lamp on", "set the lights to 30 percent", "it's too dark in here"], [
        "switch the {room} lights on", "kill the lights in the {room}", "dim the {room} a little",
        "brighten the {room}", "can you light up the {room}", "all lights off, I'm going to bed", "turn off the {room} lamp"]),
    "thermostat": ("heating, cooling and the thermostat", [
        "set the thermostat to 70", "turn up the heat", "make it cooler in here", "turn on the air conditioning",
        "what's the thermostat set to", "lower the temperature by two degrees", "it's freezing, warm the house up",
        "turn off the heating"], [
        "heat the house to {temp}", "set the AC to {temp}", "make the {room} {temp}", "I'm too hot, cool it down",
        "switch the heating on in the {room}", "change the thermostat to {temp}", "it's chilly, raise the temperature"]),
    "calendar_add": ("add an event or meeting to the calendar", [
        "add a meeting to my calendar", "schedule a dentist appointment for Tuesday", "put lunch with Anna on Friday",
        "create an event for my birthday party", "book a call with the team at 3 pm", "add yoga to my calendar every Monday",
        "put the conference on my schedule", "new calendar event tomorrow at noon"], [
        "put my {event} on the calendar {day}", "schedule {event} {day} at {time}", "add {event} to my schedule",
        "block {day} at {time} for {event}", "can you create a calendar entry for {event}",
        "I have a {event} {day}, add it", "make an event called {event}"]),
    "calendar_query": ("what is on the calendar", [
        "what's on my calendar today", "do I have any meetings tomorrow", "when is my next appointment",
        "am I free on Friday afternoon", "what does my week look like", "show me my schedule",
        "what time is my dentist appointment", "any events this weekend"], [
        "what do I have {day}", "is anything scheduled {day}", "when is my {event}", "am I busy {day} at {time}",
        "read me my agenda for {day}", "how many meetings do I have {day}", "is my {event} still on"]),
    "reminder_set": ("set a reminder to do something", [
        "remind me to call mom", "set a reminder to buy milk", "don't let me forget the meeting",
        "remind me tomorrow to pay the bills", "remind me at 5 to leave for the station", "I need a reminder to take my medicine",
        "create a reminder for the rent", "remind me to water the plants on Sunday"], [
        "remind me to {task} {day}", "don't let me forget to {task}", "nudge me at {time} to {task}",
        "I keep forgetting to {task}, remind me", "reminder: {task}", "ping me {day} to {task}",
        "make a note to remind me to {task} at {time}"]),
    "email_send": ("write and send an email", [
        "send an email to John", "email my boss that I'm running late", "write an email to the landlord",
        "compose a message to support@example.com", "reply to Sarah's email", "send the report to the team by email",
        "draft an email to my teacher", "email my dentist to reschedule"], [
        "shoot {person} an email saying I'll be late", "write to {person} by email about {event}",
        "email {person} the photos", "send {person} a quick email", "compose an email for {person}",
        "I need to email {person} about {task}", "draft a reply to {person}'s last email"]),
    "email_read": ("read or check the inbox", [
        "check my email", "do I have new messages in my inbox", "read my latest email", "any emails from my boss",
        "how many unread emails do I have", "what did Sarah email me", "open my inbox", "read the email from the bank"], [
        "anything new in my inbox", "did {person} email me", "read out my unread mail", "go through my emails",
        "what's the latest message from {person}", "check if {person} replied", "any important email {day}"]),
    "call": ("make a phone call", [
        "call mom", "phone John", "dial 555-0123", "ring my sister", "make a call to the office",
        "call the pizza place", "I need to call my doctor", "video call Grandma"], [
        "give {person} a ring", "phone {person} now", "get {person} on the line", "start a call with {person}",
        "can you dial {person} for me", "I want to talk to {person}, call them", "ring {person} on speaker"]),
    "text_message": ("send a text or chat message", [
        "text John that I'm on my way", "send a message to mom", "tell Anna I'll be late by text",
        "send an SMS to 555-0199", "message the group chat", "text my wife I love her", "whatsapp Carlos",
        "reply to the last text"], [
        "send {person} a text saying running late", "text {person} ok", "message {person} that dinner is ready",
        "let {person} know by text that I arrived", "sms {person}: see you at {time}", "drop {person} a text",
        "send a quick message to {person}"]),
    "directions": ("directions and navigation to a place", [
        "how do I get to the airport", "directions to the nearest gas station", "navigate home",
        "what's the fastest route to work", "take me to Central Park", "how far is the mall", "walking directions to the museum",
        "show me the way to the train station"], [
        "get me to {place}", "route to {place} please", "how do I drive to {place}", "which way to {place}",
        "start navigation to {place}", "how long does it take to walk to {place}", "guide me to {place}"]),
    "traffic": ("traffic conditions on the road", [
        "how's the traffic", "is there traffic on the highway", "any accidents on my commute",
        "how bad is traffic to work right now", "are the roads busy", "is the bridge congested",
        "traffic report please", "will I hit traffic going downtown"], [
        "is the drive to {place} jammed", "any road works on the way to {place}", "are there delays on my route",
        "how congested is it near {place}", "check the roads before I leave", "is it rush hour on the interstate",
        "any traffic jams {day}"]),
    "restaurant_book": ("book a table at a restaurant", [
        "book a table for two", "make a dinner reservation for 7 pm", "reserve a table at an Italian place",
        "can I get a booking for four tonight", "find me a table at a sushi restaurant", "book brunch for Sunday",
        "reserve a spot at the steakhouse", "I want to eat out tonight, make a reservation"], [
        "reserve {cuisine} for 6 {day}", "get us a table at a {cuisine} restaurant at {time}",
        "book dinner {day} at {time}", "table for three at a {cuisine} place", "make a restaurant booking for {day}",
        "I'd like a reservation for {time} {day}", "find a {cuisine} spot and book a table"]),
    "food_order": ("order food delivery or takeout", [
        "order a pizza", "get me some Chinese takeout", "I want to order food", "deliver sushi to my house",
        "order my usual from the burger place", "can you get dinner delivered", "order a coffee for pickup",
        "I'm hungry, order something"], [
        "order {dish} for delivery", "get {dish} delivered", "I want {dish} brought to my door",
        "place a takeout order for {dish}", "can I get {cuisine} delivered tonight", "order {dish} to pick up at {time}",
        "send me {dish}"]),
    "taxi": ("book a taxi or ride", [
        "call me a taxi", "book an Uber to the airport", "I need a ride", "get me a cab", "order a car to the station",
        "book a Lyft for 6 am", "how much is a taxi downtown", "schedule a ride home"], [
        "get me a car to {place}", "I need a cab at {time}", "book a ride to {place} {day}", "send a taxi to pick me up",
        "order an uber for {time}", "can I get a lift to {place}", "arrange a taxi for {day}"]),
    "flight_status": ("status of a flight", [
        "is my flight on time", "check flight status", "has flight BA 283 landed", "when does my flight depart",
        "is the flight to London delayed", "what gate is my flight", "did the flight from Tokyo arrive",
        "flight status for United 45"], [
        "is {flight} delayed", "when does {flight} land", "has {flight} taken off yet", "what's the status of {flight}",
        "which gate does {flight} leave from", "is my flight to {city} on schedule", "track {flight}"]),
    "hotel_book": ("book a hotel room", [
        "book a hotel in Rome", "find me a room for tonight", "reserve a hotel near the airport",
        "I need accommodation for three nights", "book a double room for the weekend", "get me a hotel in Berlin",
        "find a cheap hotel downtown", "reserve a suite for our anniversary"], [
        "get a hotel room in {city} {day}", "book somewhere to stay in {city}", "reserve two nights in {city}",
        "I need a place to sleep in {city}", "find accommodation in {city} for {day}", "book me a room near {place}",
        "any hotels available in {city}"]),
    "translate": ("translate text into another language", [
        "translate hello into French", "how do you say thank you in Spanish", "what is cat in German",
        "translate this sentence to Italian", "say good night in Japanese", "what does merci mean",
        "translate 'where is the bathroom' to Portuguese", "how do I say I'm sorry in Korean"], [
        "how would I say '{phrase}' in {language}", "put '{phrase}' into {language}", "translate '{phrase}'",
        "what's '{phrase}' in {language}", "{language} for '{phrase}' please", "can you translate into {language}: {phrase}",
        "say '{phrase}' in {language}"]),
    "definition": ("the meaning or definition of a word", [
        "what does ubiquitous mean", "define serendipity", "what's the meaning of the word ephemeral",
        "look up the definition of esoteric", "what is a synonym for happy", "give me the definition of paradigm",
        "what does the word cogent mean", "explain the word nostalgia"], [
        "define {word}", "meaning of {word}", "what is the definition of {word}", "what does {word} mean",
        "look up {word} in the dictionary", "is {word} a real word and what does it mean", "tell me what {word} means"]),
    "news": ("news headlines", [
        "what's in the news", "read me the headlines", "latest news please", "what happened in the world today",
        "any breaking news", "give me the tech news", "news about the election", "what are today's top stories"], [
        "catch me up on {topic} news", "headlines about {topic}", "what's new in {topic}", "brief me on today's news",
        "anything big happen in {topic} today", "read the {topic} headlines", "top stories in {city}"]),
    "sports": ("sports scores and results", [
        "what's the score of the game", "did the Yankees win", "when do the Lakers play next", "football results today",
        "who won the match last night", "what's the Premier League table", "score of the Celtics game",
        "is the match still on"], [
        "how did {team} do", "what was the final score for {team}", "when is {team}'s next game", "did {team} lose {day}",
        "are {team} winning", "results for {team}", "who do {team} play {day}"]),
    "stocks": ("stock prices and the markets", [
        "what's Apple stock at", "how is the stock market doing", "price of Tesla shares", "how did the Dow close",
        "is Google stock up today", "check my portfolio", "what's the S&P 500 at", "stock quote for Amazon"], [
        "how are {stock} shares doing", "what's the price of {stock}", "is {stock} up or down", "{stock} stock quote",
        "how did {stock} close {day}", "give me the share price for {stock}", "are markets up today"]),
    "currency": ("convert between currencies", [
        "convert 100 dollars to euros", "what's the exchange rate for yen", "how much is 50 pounds in dollars",
        "dollar to peso rate", "how many euros is 20 dollars", "convert my budget to Canadian dollars",
        "what's one bitcoin in dollars", "exchange rate between the rupee and the dollar"], [
        "change {amount} into {currency}", "how much is {amount} in {currency}", "what's {amount} worth in {currency}",
        "exchange rate for {currency}", "convert {amount}", "{amount} to {currency}", "rate from dollars to {currency}"]),
    "calculator": ("arithmetic and calculations", [
        "what's 15 times 12", "calculate 20 percent of 150", "what is the square root of 81", "add 345 and 789",
        "divide 1000 by 8", "what's 2 plus 2", "how much is 7 cubed", "compute 123 minus 45"], [
        "what is {math}", "work out {math}", "calculate {math}", "{math}?", "can you do the maths: {math}",
        "solve {math}", "quick sum: {math}"]),
    "shopping_list": ("add to or read the shopping list", [
        "add milk to my shopping list", "put eggs on the grocery list", "what's on my shopping list",
        "remove bread from the list", "I need to buy apples, add them", "add toothpaste to my list",
        "clear my shopping list", "read me the grocery list"], [
        "put {item} on the list", "we're out of {item}, add it", "add {item} to groceries", "is {item} on my shopping list",
        "take {item} off the list", "note {item} for my next shop", "what do I still need to buy"]),
    "balance": ("bank account balance", [
        "what's my bank balance", "how much money do I have", "check my checking account", "balance of my savings",
        "how much is left in my account", "what's my credit card balance", "show my account balance",
        "do I have enough money for rent"], [
        "how much is in my {account} account", "what's the balance on {account}", "check my {account} balance",
        "how much cash do I have left", "tell me my {account} account total", "am I overdrawn", "what's left in {account}"]),
    "transfer": ("send or transfer money", [
        "transfer 100 dollars to savings", "send money to John", "pay my sister back 20 dollars",
        "move 500 from checking to savings", "wire money to my landlord", "venmo Alex for dinner",
        "send 50 euros to Maria", "make a bank transfer"], [
        "send {amount} to {person}", "transfer {amount} to my {account} account", "pay {person} {amount}",
        "move {amount} into {account}", "wire {amount} to {person}", "I owe {person} {amount}, send it",
        "put {amount} from {account} into savings"]),
}

OUT_OF_SCOPE = [
    "what is the meaning of life", "tell me a joke", "who are you", "how old is the universe", "sing me a song",
    "what's your favourite colour", "I'm bored", "can you fix my car", "what should I name my dog",
    "write a poem about the sea", "recommend a good book", "how do I tie a tie", "is it healthy to eat eggs",
    "what's the capital of Australia", "how many legs does a spider have", "I feel sad today",
    "explain quantum physics", "who painted the Mona Lisa", "what's a good workout routine", "do you dream",
    "how do I get a stain out of a shirt", "what are you wearing", "how tall is Mount Everest",
    "give me a recipe for pancakes", "help me with my homework", "how do vaccines work", "what year is it",
    "who won the Nobel prize in physics", "how do I learn to code", "what's the best phone to buy",
    "why is the sky blue", "tell me a fun fact",
]

WRAP = [("", ""), ("", ""), ("hey, ", ""), ("", " please"), ("", " thanks"), ("ok so ", ""), ("quick one: ", "")]


def typo(s: str) -> str:
    words = s.split()
    i = R.randrange(len(words))
    w = words[i]
    if len(w) > 3 and w.isalpha():
        j = R.randrange(1, len(w) - 1)
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def fill(template: str) -> str:
    out = template
    for k, vals in SLOTS.items():
        while "{" + k + "}" in out:
            out = out.replace("{" + k + "}", R.choice(vals), 1)
    return out


def test_rows() -> list[dict[str, str]]:
    rows = []
    for name, (_, examples, templates) in ROUTES.items():
        seen = {e.lower() for e in examples}
        made: list[str] = []
        tries = 0
        while len(made) < PER_ROUTE_TEST and tries < 10_000:
            tries += 1
            pre, post = R.choice(WRAP)
            text = pre + fill(R.choice(templates)) + post
            if R.random() < 0.125:
                text = typo(text)
            if R.random() < 0.2:
                text = text.capitalize()
            if text.lower() in seen:
                continue  # never a training example, never a duplicate
            seen.add(text.lower())
            made.append(text)
        rows.extend({"text": t, "label": name} for t in made)
    R.shuffle(rows)
    return rows


def main() -> None:
    spec = {
        "name": "assistant-intents",
        "router": "semantic",
        "embedder": "local-minilm",
        "model": "local-strong",
        "stages": [{"router": "semantic", "threshold": 0.8}, {"router": "llm", "threshold": 0.0, "shortlist": 5}],
        "llm": {"examples": 8},
        "routes": {name: {"description": desc, "utterances": ex} for name, (desc, ex, _) in ROUTES.items()},
    }
    head = ("# 32 assistant intents, 8 examples each (generated by make_data.py; test.jsonl is held out).\n"
            "#   turnout route eval examples/intents/router.yaml examples/intents/test.jsonl\n"
            "#   turnout route fit examples/intents/router.yaml examples/intents/train.jsonl -o fitted.yaml\n"
            "# --router cascade: what the embeddings are unsure of goes to the LLM, which chooses among their\n"
            "# best 5 routes, reading those routes' examples (pip install 'turnout[local-strong]' for its model);\n"
            "# `route fit --router cascade --objective precision` sizes that shortlist from held-out coverage\n")
    (HERE / "router.yaml").write_text(head + yaml.safe_dump(spec, sort_keys=False, width=120))
    train = [{"text": e, "label": name} for name, (_, ex, _) in ROUTES.items() for e in ex]
    test = test_rows()
    assert not {r["text"].lower() for r in train} & {r["text"].lower() for r in test}
    for fname, rows in (("train.jsonl", train), ("test.jsonl", test),
                        ("oos.jsonl", [{"text": t, "label": None} for t in OUT_OF_SCOPE])):
        (HERE / fname).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(ROUTES)} routes, {len(train)} train rows, {len(test)} test rows, {len(OUT_OF_SCOPE)} out of scope")


if __name__ == "__main__":
    main()
