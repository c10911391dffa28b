"""SupportSim's simulated users: reveal only when asked, confirm only matching proposals, stop."""

from __future__ import annotations

import re

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from archer_agents.environments.support.tasks import Intent, ItemWish, UserGoal
from archer_agents.environments.support.user import (
    STOP,
    LLMUser,
    RuleBasedUser,
    is_affirmative,
    proposal_kind,
)
from archer_agents.tools.support.models import Address

ORDER = "#W1234567"
ITEM, NEW_ITEM, OTHER_ITEM = "1111111111", "2222222222", "3333333333"
CARD, GIFT = "credit_card_7654321", "gift_card_1234567"


def make_goal(*intents: Intent, knows_email: bool = True, knows_ids: bool = True) -> UserGoal:
    return UserGoal(
        user_id="ana_li_1234",
        first_name="Ana",
        last_name="Li",
        zip="78701",
        email="ana.li12@example.com",
        knows_email=knows_email,
        knows_order_ids=knows_ids,
        intents=list(intents),
    )


CANCEL = Intent(
    kind="cancel",
    request="I'd like to cancel an order.",
    order_id=ORDER,
    order_hint="the order with the Laptop",
    reason="no longer needed",
)
RETURN = Intent(
    kind="return",
    request="I'd like to return some items from an order I received.",
    order_id=ORDER,
    items=[ItemWish(item_id=ITEM, description="the Lamp (color: red)")],
    payment_method_id=GIFT,
    payment_phrase="my gift card",
)
EXCHANGE = Intent(
    kind="exchange",
    request="I'd like to exchange an item.",
    order_id=ORDER,
    items=[
        ItemWish(
            item_id=ITEM,
            description="the Lamp (color: red)",
            wanted=[{"color": "blue"}, {"color": "green"}],
            new_item_id=NEW_ITEM,
        )
    ],
    payment_method_id=CARD,
    payment_phrase="my visa credit card ending in 1234",
)
ADDRESS = Intent(
    kind="modify_address",
    request="I need to change the shipping address.",
    order_id=ORDER,
    new_address=Address(
        address1="12 Oak Avenue", address2="", city="Austin", state="TX", country="USA", zip="78702"
    ),
)
INFO = Intent(
    kind="info",
    request="What is the tracking number of one of my orders?",
    order_id=ORDER,
    question="What is the tracking number of one of my orders?",
    answer="123456789012",
)
REFUSE = Intent(
    kind="refuse",
    request="I'd like to cancel an order.",
    order_id=ORDER,
    reason="ordered by mistake",
    forbidden="cancel",
)


def started(goal: UserGoal) -> tuple[RuleBasedUser, str]:
    user = RuleBasedUser()
    return user, user.start(goal)


def test_opening_is_vague() -> None:
    _, opening = started(make_goal(CANCEL))
    assert opening == "Hi! I'd like to cancel an order."
    assert "@" not in opening and not re.search(r"\d", opening)


def test_reveals_identity_only_when_asked() -> None:
    user, _ = started(make_goal(CANCEL))
    chatter = user.reply("Thanks for reaching out to our store.")
    assert "ana.li12@example.com" not in chatter and "78701" not in chatter
    assert (
        user.reply("Could you tell me your email address?") == "My email is ana.li12@example.com."
    )
    assert (
        user.reply("What is your name and zip code?") == "My name is Ana Li. My zip code is 78701."
    )
    assert user.reply("What is your user id?") == "I don't know my user id."


def test_says_it_does_not_remember_what_it_does_not_know() -> None:
    user, _ = started(make_goal(CANCEL, knows_email=False, knows_ids=False))
    email = user.reply("Could you please tell me your email address?")
    assert email == "Sorry, I don't remember my email address."
    order = user.reply("What is the order id?")
    assert order == "I don't remember the order id, but it's the order with the Laptop."
    assert ORDER not in order


def test_answers_details_of_the_current_request() -> None:
    user, _ = started(make_goal(EXCHANGE))
    assert user.reply("What is the order id?") == f"The order id is {ORDER}."
    items = user.reply("Which items would you like to exchange, and which payment method?")
    assert "the Lamp (color: red)" in items and "color: blue" in items and "color: green" in items
    assert "visa credit card ending in 1234" in items


def test_confirms_only_a_matching_proposal() -> None:
    user, _ = started(make_goal(RETURN))
    wrong_item = user.reply(
        f"I will return item {OTHER_ITEM} of order {ORDER} to {GIFT}. Do you confirm (yes/no)?"
    )
    assert wrong_item.startswith("No") and "the Lamp (color: red)" in wrong_item
    wrong_payment = user.reply(
        f"I will return item {ITEM} of order {ORDER} to {CARD}. Do you confirm (yes/no)?"
    )
    assert wrong_payment.startswith("No")
    wrong_order = user.reply(
        f"I will return item {ITEM} of order #W7654321 to {GIFT}. Do you confirm (yes/no)?"
    )
    assert wrong_order.startswith("No")
    wrong_action = user.reply(f"I will cancel order {ORDER}. Do you confirm (yes/no)?")
    assert wrong_action.startswith("No")
    right = user.reply(
        f"I will return item {ITEM} of order {ORDER} with the refund to {GIFT}. Shall I proceed?"
    )
    assert is_affirmative(right)
    report = user.reply("The return is requested. Is there anything else?")
    assert report.endswith(STOP)


@pytest.mark.parametrize(
    "proposal, accepted",
    [
        (f"I will exchange {ITEM} for {NEW_ITEM} in {ORDER}, paying with {CARD}. Confirm?", True),
        (
            f"I will exchange {ITEM} for {OTHER_ITEM} in {ORDER}, paying with {CARD}. Confirm?",
            False,
        ),
        (f"I will exchange {ITEM} for {NEW_ITEM} in {ORDER}, paying with {GIFT}. Confirm?", False),
    ],
)
def test_exchange_proposals(proposal: str, accepted: bool) -> None:
    user, _ = started(make_goal(EXCHANGE))
    assert is_affirmative(user.reply(proposal)) == accepted


def test_address_and_cancel_proposals() -> None:
    user, _ = started(make_goal(ADDRESS))
    assert user.reply("What is the new shipping address?") == (
        "The new address is 12 Oak Avenue, Austin, TX, USA, 78702."
    )
    assert not is_affirmative(
        user.reply(f"I will change the address of {ORDER} to 1 Elm St, 78702. Confirm?")
    )
    assert is_affirmative(
        user.reply(f"I will change the address of {ORDER} to 12 Oak Avenue, 78702. Confirm?")
    )
    user, _ = started(make_goal(CANCEL))
    assert not is_affirmative(
        user.reply(f"Cancel {ORDER} with reason 'ordered by mistake'? Please confirm.")
    )
    assert is_affirmative(
        user.reply(f"Cancel {ORDER} with reason 'no longer needed'? Please confirm.")
    )


def test_proposal_needs_a_confirmation_question() -> None:
    assert proposal_kind(f"I cancelled order {ORDER}.") is None
    assert proposal_kind(f"Should I cancel order {ORDER}?") == "cancel"
    assert proposal_kind(f"Shall I change the payment of {ORDER} to {GIFT}?") == "modify_payment"
    assert proposal_kind(f"Shall I replace {ITEM} with {NEW_ITEM}?") == "modify_items"


def test_information_request_is_met_by_the_answer_only() -> None:
    user, _ = started(make_goal(INFO, CANCEL))
    not_yet = user.reply("Your order has shipped. Anything else?")
    assert STOP not in not_yet and "tracking number" in not_yet
    answered = user.reply("The tracking number is 123456789012. Anything else?")
    assert "another request: I'd like to cancel an order." in answered


def test_forbidden_request_is_met_by_a_refusal_or_confirmed_if_proposed() -> None:
    user, _ = started(make_goal(REFUSE))
    assert user.reply("Sorry, I cannot cancel that order: it is not yours.").endswith(STOP)
    user, _ = started(make_goal(REFUSE))
    assert is_affirmative(user.reply(f"Should I cancel {ORDER} as 'ordered by mistake'?"))


def test_gives_up_when_the_conversation_goes_nowhere() -> None:
    user, _ = started(make_goal(CANCEL))
    replies = [user.reply("Lovely weather today.") for _ in range(RuleBasedUser.max_idle)]
    assert all(STOP not in r for r in replies[:-1])
    assert replies[-1].endswith(STOP) and user.done


def test_repeated_questions_are_idle_but_answered() -> None:
    user, _ = started(make_goal(CANCEL))
    replies = [user.reply("What is your email?") for _ in range(RuleBasedUser.max_idle + 1)]
    assert replies[0] == "My email is ana.li12@example.com."
    assert replies[-1].endswith(STOP)


def test_reply_before_start_is_a_developer_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        RuleBasedUser().reply("hello?")


def test_llm_user_with_any_chat_model() -> None:
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage("Hi, I want to cancel an order."),
                AIMessage("My email is ana.li12@example.com."),
                AIMessage(f"Yes, thanks! {STOP}"),
            ]
        )
    )
    user = LLMUser(model)
    assert user.start(make_goal(CANCEL)) == "Hi, I want to cancel an order."
    assert user.reply("What is your email?") == "My email is ana.li12@example.com."
    assert user.reply("Shall I cancel it?").endswith(STOP)
    system = user._messages[0].content
    assert "ana.li12@example.com" in system and ORDER in system and STOP in system
    with pytest.raises(RuntimeError, match="start"):
        LLMUser(model).reply("hi")
