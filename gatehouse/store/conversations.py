"""The web chat's conversations and messages, always looked up through their owner: another
user's conversation is not found, exactly as one that does not exist."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select, update

from gatehouse.store.accounts import new_id
from gatehouse.store.db import Store
from gatehouse.store.tables import ChatMessage, Conversation

TITLE_MAX = 200
PAGE_MAX = 100  # conversations per page of the list
MESSAGES_MAX = 5000  # messages read for one conversation (oldest dropped beyond)


def title_from(text: str, limit: int = 60) -> str:
    """A conversation's first title: the first line of its first message, cut at a word."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line or "New chat"
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut + "…"


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _message(conversation_id: str, seq: int, role: str, content: str, status: str,
             model: str, request_id: str, now: float) -> ChatMessage:
    return ChatMessage(id=new_id("msg"), conversation_id=conversation_id, seq=seq, role=role,
                       content=content, status=status, model=model[:128],
                       request_id=request_id[:64], error=None, created_at=now, updated_at=now)


class Conversations:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, user_id: str, title: str, model: str,
                     rows: Sequence[tuple[str, str, str]] = (), request_id: str = "",
                     ) -> tuple[Conversation, list[ChatMessage]]:
        """A new conversation with its first messages (role, content, status), in one
        transaction."""
        now = time.time()
        row = Conversation(id=new_id("conv"), user_id=user_id, title=title[:TITLE_MAX],
                           model=model[:128], created_at=now, updated_at=now)
        made = [_message(row.id, seq, role, content, status, model, request_id, now)
                for seq, (role, content, status) in enumerate(rows)]
        async with self.store.session() as s:
            s.add(row)
            await s.flush()  # the conversation before its messages (PostgreSQL's foreign key)
            s.add_all(made)
            await s.commit()
        return row, made

    async def get(self, user_id: str, conversation_id: str) -> Conversation | None:
        if len(conversation_id) > 40:
            return None
        async with self.store.session() as s:
            row = await s.get(Conversation, conversation_id)
        return row if row is not None and row.user_id == user_id else None

    async def page(self, user_id: str, *, find: str = "", before: float | None = None,
                   limit: int = 30) -> list[Conversation]:
        """Newest first; ``before`` (an ``updated_at``) pages on; ``find`` matches titles and
        message text."""
        query = select(Conversation).where(Conversation.user_id == user_id)
        if before is not None:
            query = query.where(Conversation.updated_at < before)
        if find:
            pattern = _like(find[:200])
            inside = select(ChatMessage.conversation_id).where(
                ChatMessage.content.ilike(pattern, escape="\\"))
            query = query.where(or_(Conversation.title.ilike(pattern, escape="\\"),
                                    Conversation.id.in_(inside)))
        query = query.order_by(Conversation.updated_at.desc()).limit(max(1, min(limit,
                                                                              PAGE_MAX)))
        async with self.store.session() as s:
            return list((await s.scalars(query)).all())

    async def rename(self, user_id: str, conversation_id: str, title: str) -> bool:
        async with self.store.session() as s:
            result = await s.execute(update(Conversation).where(
                Conversation.id == conversation_id, Conversation.user_id == user_id).values(
                title=title[:TITLE_MAX]))
            await s.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete(self, user_id: str, conversation_id: str) -> bool:
        async with self.store.session() as s:
            owned = await s.scalar(select(Conversation.id).where(
                Conversation.id == conversation_id, Conversation.user_id == user_id))
            if owned is None:
                return False
            # explicit: SQLite enforces the cascade only with its pragma on
            await s.execute(delete(ChatMessage).where(
                ChatMessage.conversation_id == conversation_id))
            await s.execute(delete(Conversation).where(Conversation.id == conversation_id))
            await s.commit()
        return True

    async def messages(self, conversation_id: str) -> list[ChatMessage]:
        async with self.store.session() as s:
            rows = (await s.scalars(select(ChatMessage).where(
                ChatMessage.conversation_id == conversation_id).order_by(
                ChatMessage.seq.desc()).limit(MESSAGES_MAX))).all()
        return list(reversed(rows))

    async def message(self, user_id: str, message_id: str) -> ChatMessage | None:
        if len(message_id) > 40:
            return None
        async with self.store.session() as s:
            row = await s.scalar(select(ChatMessage).join(
                Conversation, Conversation.id == ChatMessage.conversation_id).where(
                ChatMessage.id == message_id, Conversation.user_id == user_id))
        return row

    async def append(self, conversation_id: str, rows: Sequence[tuple[str, str, str]], *,
                     model: str = "", request_id: str = "", drop_from: int | None = None,
                     ) -> list[ChatMessage]:
        """Add messages (role, content, status) after the last one — after deleting those
        from ``drop_from`` (a ``seq``) on, for regenerate and edit."""
        now = time.time()
        async with self.store.session() as s:
            if drop_from is not None:
                await s.execute(delete(ChatMessage).where(
                    ChatMessage.conversation_id == conversation_id,
                    ChatMessage.seq >= drop_from))
            last = await s.scalar(select(func.max(ChatMessage.seq)).where(
                ChatMessage.conversation_id == conversation_id))
            seq = -1 if last is None else int(last)
            made = [_message(conversation_id, seq + 1 + i, role, content, status, model,
                             request_id, now)
                    for i, (role, content, status) in enumerate(rows)]
            s.add_all(made)
            await s.execute(update(Conversation).where(
                Conversation.id == conversation_id).values(updated_at=now, model=model[:128]))
            await s.commit()
        return made

    async def save(self, message_id: str, content: str, status: str,
                   error: str | None = None) -> None:
        async with self.store.session() as s:
            await s.execute(update(ChatMessage).where(ChatMessage.id == message_id).values(
                content=content, status=status, error=error, updated_at=time.time()))
            await s.commit()
