"""Google Gemini API provider (generateContent / streamGenerateContent / batchEmbedContents)."""
