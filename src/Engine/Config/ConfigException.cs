namespace Harness.Engine.Config;

/// <summary>A config.json field that is missing or of the wrong type; the message reads "config.json: text_config.hidden_size is missing".</summary>
public sealed class ConfigException : Exception, IO.IInputError
{
    /// <summary>The file (or the name given to <see cref="HfConfig.Parse"/>).</summary>
    public string SourceName { get; }

    /// <summary>Dotted JSON path of the field at fault ("" for the document itself).</summary>
    public string JsonPath { get; }

    string IO.IInputError.InputPath => SourceName;

    public ConfigException(string sourceName, string jsonPath, string problem, Exception? inner = null)
        : base(jsonPath.Length == 0 ? $"{sourceName}: {problem}" : $"{sourceName}: {jsonPath} {problem}", inner)
    {
        SourceName = sourceName;
        JsonPath = jsonPath;
    }
}
