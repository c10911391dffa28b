"""SupportSim (``archer/SupportSim-v0``): a tau-bench-style retail support desk.

The agent works a generated store database through LangChain tools (look up
users, orders and products; cancel, modify, return, exchange; transfer to a
human) and talks to a simulated customer with ``respond(message=...)``: the
customer's reply is the next observation. Parsing, argument validation and
error observations are `ToolCallingEnv`'s; this class adds the conversation,
the policy and the reward.

The observation is the whole history, exactly what `prompts.render_messages`
gives for the same conversation as LangChain messages: `SYSTEM_PROMPT` (the
policy and how to call tools) as the system message, the customer's opening
line as the first user message with the tools bound, then one
``Action: ...`` / ``Observation: ...`` pair a turn, where a tool's output is
the observation and, after a ``respond`` call, ``User: <reply>`` is::

    <policy>
    <call format>
    Task: <customer's opening line>
    Tools:
    - find_user_id_by_email(email: string): ...
    Action: {"arguments": {"message": "..."}, "name": "respond"}
    Observation: User: <customer's reply>

Deployed, the same text reaches the policy: `serve_customer` plays a customer
against ``load_agent(policy, build_support_tools(store),
system_prompt=SYSTEM_PROMPT)``, where ``respond`` is ``return_direct`` (it ends
the agent's turn; the message goes to the customer) and the customer's next
message comes in as a user message; `render_messages` leaves out the tool
message of a call a user message follows, so it renders as above.

The episode ends when the customer says `STOP`, when the agent transfers to a
human (terminated), or after ``max_turns`` agent turns (truncated).

Reward (at the end only): 1 when the final database equals the database
obtained by replaying the task's gold actions on a fresh copy (fingerprints of
canonical JSON) and every required output was said in a ``respond`` message;
else 0. ``info`` at the end reports ``db_match``, ``output_match``,
``writes_confirmed`` (each successful write came right after a user "yes"),
``writes``, ``tool_errors`` and ``invalid_actions``.

Speed: a step touches only the records a tool reads or replaces; each episode
starts from a copy-on-write fork of the generated database, and the
fingerprint at the end re-hashes only the records the episode replaced. The
history grows by appending each turn's text, never by re-rendering.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable

from archer_agents.environments.base import ScriptedAgent
from archer_agents.environments.support.task_generator import generate_tasks
from archer_agents.environments.support.tasks import SupportTask, UserGoal, mentions
from archer_agents.environments.support.user import (
    STOP,
    RuleBasedUser,
    SupportUser,
    is_affirmative,
)
from archer_agents.environments.tool_env import CallRecord, ToolCallingEnv, ToolTask
from archer_agents.formats.prompts import message_text
from archer_agents.tools.support.generate import DatabaseSize, generate_database
from archer_agents.tools.support.models import RecordDigests
from archer_agents.tools.support.policy import POLICY
from archer_agents.tools.support.store import SupportStore
from archer_agents.tools.support.tools import (
    RESPOND,
    TRANSFER,
    WRITE_TOOLS,
    build_support_tools,
    replay,
)

logger = logging.getLogger(__name__)

CALL_FORMAT = (
    'Call exactly one tool per turn, as JSON {"name": "<tool>", "arguments": {...}} '
    'or as <tool>(arg="value"). Talk to the user only with respond(message="...").'
)
SYSTEM_PROMPT = f"{POLICY}\n{CALL_FORMAT}"
"""The system message of every SupportSim conversation: the policy, then `CALL_FORMAT`."""


class SupportSimEnv(ToolCallingEnv):
    """The support desk: a generated database, its tools, a policy and a simulated user.

    Args:
        seed: seeds the database and the task split (same seed, same everything).
        size: ``"default"`` (about tau-bench retail's size), ``"small"`` (tests) or a
            `DatabaseSize`.
        n_train, n_test: tasks per split (test users are disjoint from train users).
        max_turns: agent turns before the episode is truncated.
        user_factory: builds the simulated user of each episode; the default is the
            deterministic `RuleBasedUser`. Pass e.g. ``lambda: LLMUser(chat_model)``.
        error_penalty: reward added on a turn whose action was a mistake (0 keeps
            returns in {0, 1}, as in tau-bench).
        tool_format: how the agent writes its calls (`ToolCallingEnv`'s option):
            ``embedded``, or a model family's own (``hermes``, ``llama3_json``).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        size: str | DatabaseSize = "default",
        n_train: int = 300,
        n_test: int = 100,
        max_turns: int = 30,
        user_factory: Callable[[], SupportUser] | None = None,
        error_penalty: float = 0.0,
        max_action_chars: int = 2_000,
        render_mode: str | None = None,
        tool_format: str = "embedded",
    ) -> None:
        self.db = generate_database(seed, size)
        self.tasks_by_split = generate_tasks(self.db, seed=seed, n_train=n_train, n_test=n_test)
        self._support_tasks = {
            task.task_id: task for tasks in self.tasks_by_split.values() for task in tasks
        }
        self.store = SupportStore(self.db.fork())
        tools = build_support_tools(self.store)
        tool_tasks = {
            split: [ToolTask(task_id=t.task_id, instruction=t.goal.instruction()) for t in tasks]
            for split, tasks in self.tasks_by_split.items()
        }
        super().__init__(
            tools,
            tool_tasks,
            self._score,
            final_tools=(TRANSFER,),
            max_turns=max_turns,
            error_penalty=error_penalty,
            max_action_chars=max_action_chars,
            render_mode=render_mode,
            tool_format=tool_format,
        )
        self.user_factory: Callable[[], SupportUser] = user_factory or RuleBasedUser
        self.user: SupportUser = self.user_factory()
        self._system = SystemMessage(SYSTEM_PROMPT)
        self._base_digests: RecordDigests | None = None
        self._gold_fingerprints: dict[str, str] = {}
        self._support_task: SupportTask | None = None
        self._said: list[str] = []
        self._last_user_yes = False
        self._writes_confirmed: list[bool] = []
        self._invalid_actions = 0
        self._report: dict[str, Any] = {}

    # -- the hidden task (for scripted experts and analysis) ---------------------
    @property
    def current_task(self) -> SupportTask:
        """The running episode's task (hidden from the agent's observation)."""
        if self._support_task is None:
            raise RuntimeError("call reset() before reading current_task")
        return self._support_task

    def support_task(self, task_id: str) -> SupportTask:
        """Any task of either split by id (goal, gold actions, required outputs)."""
        return self._support_tasks[task_id]

    # -- episode --------------------------------------------------------------------
    def initial_observation(self, task: ToolTask) -> str:
        """Start the episode: a fresh fork of the database, and the user's opening line."""
        self._support_task = self._support_tasks[task.task_id]
        self.store.db = self.db.fork()
        self.user = self.user_factory()
        opening = self.user.start(self._support_task.goal)
        self._said = []
        self._last_reply = ""
        self._last_user_yes = False
        self._writes_confirmed = []
        self._invalid_actions = 0
        self._report = {}
        return self.start_conversation([self._system, HumanMessage(opening)])

    def after_call(self, record: CallRecord) -> tuple[str, bool]:
        if record.error:
            return record.output, False
        if record.name == RESPOND:
            message = str(record.arguments["message"])
            self._said.append(message)
            reply = self.user.reply(message)
            self._last_user_yes = is_affirmative(reply)
            self._last_reply = reply
            return f"User: {reply}", STOP in reply
        if record.name in WRITE_TOOLS:
            self._writes_confirmed.append(self._last_user_yes)
            self._last_user_yes = False
        return super().after_call(record)

    def chat_reply(self, record: CallRecord | None, output: str) -> dict[str, Any]:
        """A ``respond`` call's answer is the customer's next message, not a tool result."""
        if record is not None and record.name == RESPOND and not record.error:
            return {"role": "user", "content": self._last_reply}
        return super().chat_reply(record, output)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = super().step(action)
        self._invalid_actions += int(info["invalid_action"])
        if terminated or truncated:
            info.update(self._report, invalid_actions=self._invalid_actions)
        return observation, reward, terminated, truncated, info

    # -- reward ----------------------------------------------------------------------
    def gold_fingerprint(self, task: SupportTask) -> str:
        """Fingerprint of the database after the task's gold actions (cached per task)."""
        cached = self._gold_fingerprints.get(task.task_id)
        if cached is None:
            gold = replay(self.db, [(a.name, a.arguments) for a in task.gold_actions])
            cached = gold.fingerprint(self._digests())
            self._gold_fingerprints[task.task_id] = cached
        return cached

    def _digests(self) -> RecordDigests:
        if self._base_digests is None:
            self._base_digests = self.db.record_digests()
        return self._base_digests

    def _score(self, task: ToolTask, calls: Sequence[CallRecord]) -> tuple[float, bool]:
        support_task = self._support_tasks[task.task_id]
        db_match = self.store.db.fingerprint(self._digests()) == self.gold_fingerprint(support_task)
        output_match = all(
            any(mentions(message, output) for message in self._said)
            for output in support_task.required_outputs
        )
        success = db_match and output_match
        self._report = {
            "db_match": db_match,
            "output_match": output_match,
            "writes_confirmed": all(self._writes_confirmed),
            "writes": len(self._writes_confirmed),
            "tool_errors": sum(1 for c in calls if c.error and c.name in self.tools),
            "template": support_task.template,
        }
        return (1.0 if success else 0.0), success

    # -- scripted agents ---------------------------------------------------------------
    def make_scripted_agent(self, kind: str, seed: int | None = None) -> ScriptedAgent:
        """``expert`` (knows the task, follows the policy), ``weak`` (mistakes) or ``random``."""
        from archer_agents.environments.support.agents import (
            SupportRandomAgent,
            SupportScriptedAgent,
        )

        self._check_kind(kind)
        if kind == "expert":
            return SupportScriptedAgent(self, seed=seed)
        if kind == "weak":
            return SupportScriptedAgent(self, flaw_rate=0.5, seed=seed)
        return SupportRandomAgent(seed=seed)


# -- deployment ----------------------------------------------------------------------
def said_to_customer(messages: Sequence[BaseMessage]) -> str | None:
    """What an agent's turn ended by saying to the customer, or None.

    The turn of an agent over `build_support_tools` ends with the tool message
    of a ``respond`` call (``return_direct``); its text is the message. None
    when the turn ended otherwise (a transfer, plain text, a failed call).
    """
    last = messages[-1] if messages else None
    if isinstance(last, ToolMessage) and last.name == RESPOND and last.status != "error":
        return message_text(last)
    return None


def serve_customer(
    agent: Runnable[Any, Any], user: SupportUser, goal: UserGoal, *, max_runs: int = 30
) -> list[BaseMessage]:
    """Play a simulated customer against a deployed support agent; return the conversation.

    ``agent`` is e.g. ``load_agent(policy, build_support_tools(store),
    system_prompt=SYSTEM_PROMPT)``. The customer's opening line starts the
    first run; a run ends when the agent responds (or transfers), and the
    customer's reply starts the next, as a user message appended to the
    conversation so far: what a chat front end does with each new customer
    message. A ``respond`` or transfer call that failed (bad arguments) also
    ends a run; the next run then starts from the error, as SupportSim goes on
    after one. Ends when the customer says `STOP`, when the agent's turn ends
    otherwise (a transfer, plain text), or after ``max_runs`` runs.

    For well-formed calls the policy sees exactly what SupportSim shows at the
    same point; error texts are LangChain's tool node's, not the environment's.
    """
    messages: list[BaseMessage] = [HumanMessage(user.start(goal))]
    for _ in range(max_runs):
        messages = list(agent.invoke({"messages": messages})["messages"])
        last = messages[-1]
        if isinstance(last, ToolMessage) and last.status == "error":
            continue
        said = said_to_customer(messages)
        if said is None:
            break
        reply = user.reply(said)
        messages.append(HumanMessage(reply))
        if STOP in reply:
            break
    return messages
