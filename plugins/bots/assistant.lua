--- assistant: a plain, helpful assistant for a chat (channels.NAME.bot = "assistant").
-- A bot plugin is a table: its system prompt, its own /commands, and a
-- line of help. This one has no commands of its own.
return {
  system = "You are a helpful assistant in a chat. Answer briefly and plainly; "
    .. "use short paragraphs, and code blocks only for code.",
  help = "I am an assistant: ask me anything.",
}
