"""Log-probs through the OpenAI chat-completions client: a real HTTP server on 127.0.0.1 returns the tiny
model's own next-token log-probs (`logprobs: true, top_logprobs: k`), and the client's parsing of them."""

from __future__ import annotations

import math

import pytest

from tests.openai_chat_server import TinyChatServer
from tulu_cli.preferences.chat_api import ApiError, ChatClient, EndpointConfig, parse_logprobs


@pytest.fixture
def server(tiny_model_factory, tiny_tokenizer):
    with TinyChatServer(tiny_model_factory(seed=4), tiny_tokenizer, aspects=[], max_tokens_cap=6) as running:
        yield running


def test_greedy_reply_carries_each_tokens_logprob_and_its_top_alternatives(server):
    client = ChatClient(EndpointConfig(base_url=server.base_url, model="tiny", max_retries=0))
    messages = [{"role": "user", "content": "Add 3 and 4."}]
    reply = client.complete(messages, temperature=0.0, top_p=1.0, max_tokens=6, top_logprobs=4)
    body = server.served[-1]
    assert (body["logprobs"], body["top_logprobs"]) == (True, 4)
    assert reply.logprobs is not None and 1 <= len(reply.logprobs) <= 6
    for token in reply.logprobs:
        assert len(token.top) == 4
        values = [logprob for _, logprob in token.top]
        assert values == sorted(values, reverse=True) and values[0] <= 0.0
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
        # greedy decoding takes the most likely token, so it heads its own list
        assert token.logprob == pytest.approx(values[0], abs=1e-5)
    # without the option the request asks for none and the reply has none
    plain = client.complete(messages, temperature=0.0, top_p=1.0, max_tokens=6)
    assert "logprobs" not in server.served[-1] and plain.logprobs is None and plain.text == reply.text


def test_parsing_keeps_the_servers_order_and_rejects_replies_without_logprobs():
    choice = {"logprobs": {"content": [{"token": "M", "logprob": -0.1, "top_logprobs": [
        {"token": "M", "logprob": -0.1}, {"token": "m", "logprob": -2.5}, {"token": "M", "logprob": -9.0}]}]}}
    (token,) = parse_logprobs(choice)
    assert (token.token, token.logprob, token.top) == ("M", -0.1, (("M", -0.1), ("m", -2.5), ("M", -9.0)))
    assert parse_logprobs({"logprobs": {"content": []}}) == ()
    for broken in ({}, {"logprobs": None}, {"logprobs": {"content": [{"logprob": -1.0}]}},
                   {"logprobs": {"content": [{"token": "a", "logprob": -1, "top_logprobs": [{"token": "b"}]}]}}):
        with pytest.raises((ValueError, KeyError)):
            parse_logprobs(broken)


def test_a_server_that_ignores_logprobs_is_a_clear_error(server, monkeypatch):
    client = ChatClient(EndpointConfig(base_url=server.base_url, model="tiny", max_retries=0))
    reply_without = server._completion  # the server's reply, with any logprobs removed
    monkeypatch.setattr(server, "_completion", lambda body, choice: reply_without(
        body, {k: v for k, v in choice.items() if k != "logprobs"}))
    with pytest.raises(ApiError, match="no logprobs.content"):
        client.complete([{"role": "user", "content": "Hi"}], temperature=0.0, top_p=1.0, max_tokens=2,
                        top_logprobs=2)
